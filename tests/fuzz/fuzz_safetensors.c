/* libFuzzer target for the safetensors loader: any byte string must either
 * parse into tensors that can be used and freed, or fail with a message that
 * names the problem. Build and run: see tests/fuzz/README.md. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../../formats/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pg_tensor_list l = {0, 0, NULL, NULL};
    pg_clear_error();
    if (pg_safetensors_parse(data, size, &l) == 0) {
        /* touch every element so ASan checks the sizes the loader promised */
        double sum = 0.0;
        for (int i = 0; i < l.n; i++)
            for (int64_t k = 0; k < l.tensors[i]->numel; k++)
                sum += pg_get(l.tensors[i], k);
        (void)sum;
        if (pg_last_error()[0] != '\0')
            __builtin_trap(); /* success must not leave an error behind */
    } else if (l.n != 0 || l.names != NULL || pg_last_error()[0] == '\0') {
        __builtin_trap(); /* failure: list untouched, message set */
    }
    pg_tensor_list_free_all(&l);
    return 0;
}
