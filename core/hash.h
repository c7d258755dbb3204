/* hash.h - XXH3-128 over the canonical encoding of typed values.
 * Encoding, per value in column order: one tag byte (the type family, see dp_type_tag; 'N'
 * for NULL), then, unless NULL, the length of the canonical text as 4 bytes big-endian and
 * the text itself. The 128-bit result is stored in canonical (big-endian) byte order, which
 * is how it appears as a PostgreSQL uuid. Specified in docs/auditing.md#hashing. */
#ifndef DP_HASH_H
#define DP_HASH_H

#include <stddef.h>
#include <stdint.h>
#include "buf.h"

typedef struct dp_hasher {
  dp_buf buf; /* the encoding being built; owned, freed by dp_hasher_free */
} dp_hasher;

void dp_hasher_reset(dp_hasher *h);
/* Adds one value: tag is the family tag; text NULL means SQL NULL. */
int dp_hasher_add(dp_hasher *h, char tag, const char *text, size_t len);
void dp_hasher_digest(const dp_hasher *h, uint8_t out[16]);
void dp_hasher_free(dp_hasher *h);
/* XXH3-128 of a byte string, canonical byte order. */
void dp_hash_bytes(const void *p, size_t n, uint8_t out[16]);

#endif
