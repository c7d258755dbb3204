/* hash.c - canonical typed encoding + XXH3-128 (libxxhash). */
#include "hash.h"

#include <xxhash.h>

void dp_hasher_reset(dp_hasher *h) { dp_buf_reset(&h->buf); }

int dp_hasher_add(dp_hasher *h, char tag, const char *text, size_t len) {
  if (text == NULL) return dp_buf_putc(&h->buf, 'N');
  uint8_t hdr[5] = {(uint8_t)tag, (uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
                    (uint8_t)len};
  int rc = dp_buf_append(&h->buf, hdr, sizeof hdr);
  return rc ? rc : dp_buf_append(&h->buf, text, len);
}

void dp_hash_bytes(const void *p, size_t n, uint8_t out[16]) {
  XXH128_hash_t hv = XXH3_128bits(p, n);
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, hv);
  for (int i = 0; i < 16; i++) out[i] = c.digest[i];
}

void dp_hasher_digest(const dp_hasher *h, uint8_t out[16]) {
  dp_hash_bytes(h->buf.data ? h->buf.data : "", h->buf.len, out);
}

void dp_hasher_free(dp_hasher *h) { dp_buf_free(&h->buf); }
