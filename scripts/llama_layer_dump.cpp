// llama.cpp's intermediate tensors for given prompt token ids, through the eval callback
// (cb_eval): every tensor whose name is one of attn_norm-L, kqv_out-L, ffn_norm-L,
// ffn_swiglu-L / ffn_gate_par-L, ffn_inp-L, l_out-L is written to OUT_DIR/<name>.f32 as raw
// little-endian float32, [n_tokens, width] row-major. The same inputs of the projections that
// `premoe seap trace` writes (attn_in, o_proj_in, mlp_in, down_proj_in), so
// scripts/compare_seap_layer_traces.py finds the first layer and op where the two engines part.
// A sibling of llama_prompt_logits.cpp (same build line).
//
// Usage: llama_layer_dump MODEL.gguf ID,ID,... OUT_DIR [THREADS]
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

static std::string g_out;

static bool wanted(const char * name) {
    static const char * prefixes[] = {"attn_norm-", "kqv_out-", "ffn_norm-", "ffn_swiglu-", "ffn_gate_par-", "ffn_inp-", "l_out-"};
    for (const char * p : prefixes) {
        if (std::strncmp(name, p, std::strlen(p)) == 0) return true;
    }
    return false;
}

static bool on_eval(struct ggml_tensor * t, bool ask, void *) {
    if (!wanted(t->name)) return ask ? false : true;
    if (ask) return true;
    if (t->type != GGML_TYPE_F32 || !ggml_is_contiguous(t)) {
        fprintf(stderr, "skipping %s: type %d, contiguous %d\n", t->name, (int) t->type, (int) ggml_is_contiguous(t));
        return true;
    }
    std::vector<float> data(ggml_nelements(t));
    ggml_backend_tensor_get(t, data.data(), 0, ggml_nbytes(t));
    std::string path = g_out + "/" + t->name + ".f32";
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
    if (argc != 4 && argc != 5) {
        fprintf(stderr, "usage: %s MODEL.gguf ID,ID,... OUT_DIR [THREADS]\n", argv[0]);
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
    g_out = argv[3];
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
    const int n_prompt = (int) prompt.size();
    llama_context_params ctx_params = llama_context_default_params();
    ctx_params.n_ctx = n_prompt;
    ctx_params.n_batch = n_prompt;
    ctx_params.cb_eval = on_eval;
    ctx_params.cb_eval_user_data = nullptr;
    if (argc == 5) {
        ctx_params.n_threads = ctx_params.n_threads_batch = std::atoi(argv[4]);
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
    llama_batch_ext_free(batch);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
