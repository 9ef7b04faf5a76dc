// llama.cpp's logits at every position of given prompt token ids, written as raw little-endian
// float32 (n_prompt × n_vocab values, position-major; the last row scores the first generated
// token), so scripts/check_seap_llama_cpp_logits.py compares them with
// `premoe logits` on the same GGUF file. A sibling of llama_greedy_ids.cpp (same build line).
//
// Build: c++ -O2 -std=c++17 llama_prompt_logits.cpp -I<llama.cpp>/include -I<llama.cpp>/ggml/include
//   -L<build>/bin -lllama -lggml -lggml-base -Wl,-rpath,<build>/bin
// Usage: llama_prompt_logits MODEL.gguf ID,ID,... OUT.f32 [THREADS [KV [DUMP_DIR]]]
//   KV: f16 (llama.cpp's default cache type) or f32 (keys and values kept unrounded, flash
//   attention off), to tell the cache's rounding apart from the rest of the arithmetic.
//   DUMP_DIR: also write, through the eval callback (cb_eval), every tensor named attn_norm-L,
//   kqv_out-L, ffn_norm-L, ffn_swiglu-L / ffn_gate_par-L, ffn_inp-L or l_out-L to
//   DUMP_DIR/<name>.f32 (raw float32, [n_tokens, width] row-major): the projection inputs
//   `premoe seap trace` writes, compared by scripts/compare_seap_layer_traces.py.
#include "ggml-backend.h"
#include "ggml.h"
#include "llama.h"

#include <clocale>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

static std::string g_dump;

static bool dumped(const char * name) {
    static const char * prefixes[] = {"attn_norm-", "kqv_out-", "ffn_norm-", "ffn_swiglu-", "ffn_gate_par-", "ffn_inp-", "l_out-"};
    for (const char * p : prefixes) {
        if (std::strncmp(name, p, std::strlen(p)) == 0) return true;
    }
    return false;
}

// Eval callback: asked first whether a tensor is wanted, then called with its computed data.
static bool on_eval(struct ggml_tensor * t, bool ask, void *) {
    if (!dumped(t->name)) return !ask;
    if (ask) return true;
    if (t->type != GGML_TYPE_F32 || !ggml_is_contiguous(t)) {
        fprintf(stderr, "skipping %s: type %d, contiguous %d\n", t->name, (int) t->type, (int) ggml_is_contiguous(t));
        return true;
    }
    std::vector<float> data(ggml_nelements(t));
    ggml_backend_tensor_get(t, data.data(), 0, ggml_nbytes(t));
    const std::string path = g_dump + "/" + t->name + ".f32";
    FILE * f = std::fopen(path.c_str(), "wb");
    if (f == NULL || std::fwrite(data.data(), sizeof(float), data.size(), f) != data.size()) {
        fprintf(stderr, "error: cannot write %s\n", path.c_str());
        std::exit(1);
    }
    std::fclose(f);
    return true;
}

int main(int argc, char ** argv) {
    std::setlocale(LC_NUMERIC, "C");
    if (argc < 4 || argc > 7) {
        fprintf(stderr, "usage: %s MODEL.gguf ID,ID,... OUT.f32 [THREADS [f16|f32 [DUMP_DIR]]]\n", argv[0]);
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
    if (argc == 7) {
        g_dump = argv[6];
        ctx_params.cb_eval = on_eval;
        ctx_params.cb_eval_user_data = nullptr;
    }
    if (argc >= 6 && std::string(argv[5]) == "f32") {
        ctx_params.type_k = GGML_TYPE_F32;
        ctx_params.type_v = GGML_TYPE_F32;
        ctx_params.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    } else if (argc >= 6 && std::string(argv[5]) != "f16") {
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
