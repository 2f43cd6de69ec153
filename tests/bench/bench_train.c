/* Training-step benchmarks: train_<scheme>_t<threads> tokens/s. */
#include "bench.h"

void bench_train_all(const char *only)
{
    (void)only;
}
