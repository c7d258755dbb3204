/* testhook.h - a pause point for crash tests. When DP_TEST_PAUSE names the point, the engine
 * creates the file DP_TEST_PAUSE_FILE (if set) and sleeps, so a spec can kill -9 it at a known
 * place (mid bronze write, inside the silver transaction). With DP_TEST_PAUSE_SECONDS it sleeps
 * that long and goes on (the Prefect specs stop the server meanwhile). Does nothing otherwise. */
#ifndef DP_TESTHOOK_H
#define DP_TESTHOOK_H

void dp_test_pause(const char *point);

#endif
