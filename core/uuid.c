/* uuid.c - UUID v7 (RFC 9562) and text forms. */
#include "uuid.h"
#include "error.h"

#include <ctype.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>

void dp_uuid_v7(uint8_t out[16]) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  uint64_t ms = (uint64_t)tv.tv_sec * 1000u + (uint64_t)tv.tv_usec / 1000u;
  randombytes_buf(out + 6, 10);
  for (int i = 0; i < 6; i++) out[i] = (uint8_t)(ms >> (8 * (5 - i)));
  out[6] = (uint8_t)(0x70 | (out[6] & 0x0f));
  out[8] = (uint8_t)(0x80 | (out[8] & 0x3f));
}

void dp_uuid_format(const uint8_t in[16], char out[37]) {
  static const char hex[] = "0123456789abcdef";
  int j = 0;
  for (int i = 0; i < 16; i++) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out[j++] = '-';
    out[j++] = hex[in[i] >> 4];
    out[j++] = hex[in[i] & 15];
  }
  out[j] = '\0';
}

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  c = tolower(c);
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

int dp_uuid_parse(const char *s, uint8_t out[16]) {
  size_t n = strlen(s);
  int hyphens = (n == 36);
  if (n != 36 && n != 32) return DP_EINVAL;
  int k = 0;
  for (size_t i = 0; i < n;) {
    if (hyphens && (i == 8 || i == 13 || i == 18 || i == 23)) {
      if (s[i] != '-') return DP_EINVAL;
      i++;
      continue;
    }
    int hi = hexval((unsigned char)s[i]), lo = hexval((unsigned char)s[i + 1]);
    if (hi < 0 || lo < 0) return DP_EINVAL;
    out[k++] = (uint8_t)(hi << 4 | lo);
    i += 2;
  }
  return k == 16 ? 0 : DP_EINVAL;
}
