/* The C tests' check: reports a failed condition with its place and counts
 * it; a test's main returns nonzero when `failures` is. */
#ifndef BNORM_TEST_CHECK_H
#define BNORM_TEST_CHECK_H

#include <stdio.h>

static int failures = 0;
#define CHECK(cond)                                                                \
  do {                                                                             \
    if (!(cond)) {                                                                 \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);     \
      ++failures;                                                                  \
    }                                                                              \
  } while (0)

#endif
