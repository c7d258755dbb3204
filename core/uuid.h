/* uuid.h - UUID v7 generation and text conversion (no heap memory). */
#ifndef DP_UUID_H
#define DP_UUID_H

#include <stdint.h>

/* Fills out with a new UUID v7 (48-bit Unix ms timestamp + random bits, libsodium). */
void dp_uuid_v7(uint8_t out[16]);
/* Writes the lowercase 36-char form plus NUL. */
void dp_uuid_format(const uint8_t in[16], char out[37]);
/* Parses 32 hex digits with optional hyphens at the usual places; 0 or DP_EINVAL. */
int dp_uuid_parse(const char *s, uint8_t out[16]);

#endif
