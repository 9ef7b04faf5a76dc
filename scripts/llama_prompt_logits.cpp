// llama.cpp's logits at every position of given prompt token ids, written as raw little-endian
// float32 (n_prompt × n_vocab values, position-major; the last row scores the first generated
// token), so scripts/check_seap_llama_cpp_logits.py compares them with
// `premoe logits` on the same GGUF file. A sibling of llama_greedy_ids.cpp (same build line).
//
// Build: c++ -O2 -std=c++17 llama_prompt_logits.cpp -I<llama.cpp>/include -I<llama.cpp>/ggml/include
//   -L<build>/bin -lllama -lggml -lggml-base -Wl,-rpath,<build>/bin
// Usage: llama_prompt_logits MODEL.gguf ID,ID,... OUT.f32 [THREADS [KV]]
//   KV: f16 (llama.cpp's default cache type) or f32 (keys and values kept unrounded, flash
//   attention off), to tell the cache's rounding apart from the rest of the arithmetic.
#include "llama.h"

#include <clocale>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

int main(int argc, char ** argv) {
    std::setlocale(LC_NUMERIC, "C");
    if (argc < 4 || argc > 6) {
        fprintf(stderr, "usage: %s MODEL.gguf ID,ID,... OUT.f32 [THREADS [f16|f32]]\n", argv[0]);
        return 2;
    }
    std::vector<llama_token> prompt;
    {
        std::stringstream ss(argv[2]);
        std::string item;
        while (std::getline(ss, item, ',')) prompt.push_back((llama_token) std::atoi(item.c_str()));
    }
    if (prompt.empty()) {
        fprintf(stderr, "error: empty prompt\n");
        return 2;
    }
    llama_log_set([](enum ggml_log_level level, const char * text, void *) {
        if (level >= GGML_LOG_LEVEL_WARN) fputs(text, stderr);
    }, nullptr);
    llama_backend_init();
    llama_model_params model_params = llama_model_default_params();
    model_params.n_gpu_layers = 0;
    llama_model * model = llama_model_load_from_file(argv[1], model_params);
    if (model == NULL) {
        fprintf(stderr, "error: unable to load model %s\n", argv[1]);
        return 1;
    }
    const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    const int n_prompt = (int) prompt.size();
    llama_context_params ctx_params = llama_context_default_params();
    ctx_params.n_ctx = n_prompt;
    ctx_params.n_batch = n_prompt;
    if (argc >= 5) {
        ctx_params.n_threads = ctx_params.n_threads_batch = std::atoi(argv[4]);
    }
    if (argc == 6 && std::string(argv[5]) == "f32") {
        ctx_params.type_k = GGML_TYPE_F32;
        ctx_params.type_v = GGML_TYPE_F32;
        ctx_params.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    } else if (argc == 6 && std::string(argv[5]) != "f16") {
        fprintf(stderr, "error: KV must be f16 or f32, got %s\n", argv[5]);
        return 2;
    }
    llama_context * ctx = llama_init_from_model(model, ctx_params);
    if (ctx == NULL) {
        fprintf(stderr, "error: failed to create the llama_context\n");
        return 1;
    }
    llama_batch_ext * batch = llama_batch_ext_init(ctx);
    for (int i = 0; i < n_prompt; ++i) {
        const int32_t idx = llama_batch_ext_add_token(batch, 0, prompt[i]);
        const llama_pos pos = i;
        llama_batch_ext_set_pos(batch, idx, &pos);
    }
    for (int i = 0; i < n_prompt; ++i) llama_batch_ext_set_output_logits(batch, i, true);
    if (llama_process(ctx, LLAMA_PROCESS_TYPE_DECODE, batch)) {
        fprintf(stderr, "error: llama_process failed\n");
        return 1;
    }
    FILE * out = std::fopen(argv[3], "wb");
    for (int i = 0; i < n_prompt; ++i) {
        const float * logits = llama_get_logits_ith(ctx, i);
        if (out == NULL || logits == NULL || std::fwrite(logits, sizeof(float), n_vocab, out) != (size_t) n_vocab) {
            fprintf(stderr, "error: no logits for position %d or cannot write %s\n", i, argv[3]);
            return 1;
        }
    }
    std::fclose(out);
    llama_batch_ext_free(batch);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
