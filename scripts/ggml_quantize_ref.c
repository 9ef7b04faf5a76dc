// Quantizes float32 rows with ggml's own quantizer (ggml_quantize_chunk, no importance matrix:
// the `quantize_row_*_ref` path llama-quantize takes), for scripts/make_kquant_fixtures.py.
// Usage: ggml_quantize_ref TYPE_ID N_PER_ROW IN.f32 OUT.bin
#include "ggml.h"

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char ** argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s TYPE_ID N_PER_ROW IN.f32 OUT.bin\n", argv[0]);
        return 2;
    }
    const enum ggml_type type = (enum ggml_type) atoi(argv[1]);
    const long n_per_row = atol(argv[2]);
    FILE * in = fopen(argv[3], "rb");
    if (!in) return 1;
    fseek(in, 0, SEEK_END);
    const long n = ftell(in) / 4;
    fseek(in, 0, SEEK_SET);
    float * x = malloc(n * sizeof(float));
    if (fread(x, 4, n, in) != (size_t) n) return 1;
    fclose(in);
    const long rows = n / n_per_row;
    const size_t size = ggml_row_size(type, n_per_row) * rows;
    void * q = malloc(size);
    ggml_quantize_chunk(type, x, q, 0, rows, n_per_row, NULL);
    FILE * out = fopen(argv[4], "wb");
    fwrite(q, 1, size, out);
    fclose(out);
    return 0;
}
