/* Criterion's output redirection, for the one-process runner (tests/memcheck/runner.c):
 * the suites call it only to keep a program's output out of the log (none compares the
 * captured output), so here the output simply goes to the log. */
#ifndef POSGRAD_MEMCHECK_REDIRECT_H
#define POSGRAD_MEMCHECK_REDIRECT_H
#pragma GCC system_header

static inline void cr_redirect_stdout(void) {}
static inline void cr_redirect_stderr(void) {}

#endif
