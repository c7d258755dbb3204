/* webassets.h - the status page's static files (core/web/), embedded at build time by
 * core/web/embed.cmake into webassets.c in the build folder. */
#ifndef DP_WEBASSETS_H
#define DP_WEBASSETS_H

#include <stddef.h>

typedef struct dp_web_asset {
  const char *name;          /* "app.js" */
  const unsigned char *data; /* NUL-terminated too */
  size_t len;
} dp_web_asset;

/* Every embedded file; the last entry has name NULL. */
extern const dp_web_asset dp_web_assets[];

#endif
