// Greedy decoding with llama.cpp from given prompt token ids, printing the generated ids, so
// scripts/check_gguf_llama_cpp.sh compares llama.cpp and premoe token for token on the same prompt
// ids (no tokenizer in the way). Modelled on llama.cpp's examples/simple/simple.cpp (0c1e570).
//
// Build (the check script does this): c++ -O2 -std=c++17 llama_greedy_ids.cpp -I<llama.cpp>/include
//   -I<llama.cpp>/ggml/include -L<build>/bin -lllama -Wl,-rpath,<build>/bin
// Usage: llama_greedy_ids MODEL.gguf N_PREDICT ID,ID,...   → prints "id,id,..." on stdout.
#include "llama.h"

#include <clocale>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

static void batch_set_tokens(llama_batch_ext * batch, const llama_token * tokens, int32_t n_tokens, llama_pos pos_0) {
    llama_batch_ext_clear(batch);
    for (int32_t i = 0; i < n_tokens; ++i) {
        const int32_t idx = llama_batch_ext_add_token(batch, 0, tokens[i]);
        const llama_pos pos = pos_0 + i;
        llama_batch_ext_set_pos(batch, idx, &pos);
    }
    llama_batch_ext_set_output_logits(batch, n_tokens - 1, true);
}

int main(int argc, char ** argv) {
    std::setlocale(LC_NUMERIC, "C");
    if (argc != 4) {
        fprintf(stderr, "usage: %s MODEL.gguf N_PREDICT ID,ID,...\n", argv[0]);
        return 2;
    }
    const std::string model_path = argv[1];
    const int n_predict = std::atoi(argv[2]);
    std::vector<llama_token> prompt;
    {
        std::stringstream ss(argv[3]);
        std::string item;
        while (std::getline(ss, item, ',')) prompt.push_back((llama_token) std::atoi(item.c_str()));
    }
    if (prompt.empty() || n_predict <= 0) {
        fprintf(stderr, "error: empty prompt or n_predict <= 0\n");
        return 2;
    }

    llama_log_set([](enum ggml_log_level level, const char * text, void *) {
        if (level >= GGML_LOG_LEVEL_WARN) fputs(text, stderr);
    }, nullptr);
    llama_backend_init();
    llama_model_params model_params = llama_model_default_params();
    model_params.n_gpu_layers = 0;
    llama_model * model = llama_model_load_from_file(model_path.c_str(), model_params);
    if (model == NULL) {
        fprintf(stderr, "error: unable to load model %s\n", model_path.c_str());
        return 1;
    }
    const llama_vocab * vocab = llama_model_get_vocab(model);
    const int n_prompt = (int) prompt.size();

    llama_context_params ctx_params = llama_context_default_params();
    ctx_params.n_ctx = n_prompt + n_predict;
    ctx_params.n_batch = n_prompt;
    llama_context * ctx = llama_init_from_model(model, ctx_params);
    if (ctx == NULL) {
        fprintf(stderr, "error: failed to create the llama_context\n");
        return 1;
    }
    llama_sampler * smpl = llama_sampler_chain_init(llama_sampler_chain_default_params());
    llama_sampler_chain_add(smpl, llama_sampler_init_greedy());

    llama_batch_ext * batch = llama_batch_ext_init(ctx);
    batch_set_tokens(batch, prompt.data(), n_prompt, 0);
    int n_tokens = n_prompt;
    std::vector<llama_token> out;
    for (int n_pos = 0; (int) out.size() < n_predict;) {
        if (llama_process(ctx, LLAMA_PROCESS_TYPE_DECODE, batch)) {
            fprintf(stderr, "error: llama_process failed\n");
            return 1;
        }
        n_pos += n_tokens;
        llama_token id = llama_sampler_sample(smpl, ctx, -1);
        if (std::getenv("LLAMA_GREEDY_TOP")) {  // the two best logits per step, for near-tie diagnosis
            const float * logits = llama_get_logits_ith(ctx, -1);
            const int n_vocab = llama_vocab_n_tokens(vocab);
            int a = 0, b = 1;
            if (logits[b] > logits[a]) std::swap(a, b);
            for (int i = 2; i < n_vocab; ++i) {
                if (logits[i] > logits[a]) { b = a; a = i; } else if (logits[i] > logits[b]) { b = i; }
            }
            fprintf(stderr, "step %zu: %d (%.6f) %d (%.6f)\n", out.size(), a, logits[a], b, logits[b]);
        }
        out.push_back(id);
        if (llama_vocab_is_eog(vocab, id)) break;
        batch_set_tokens(batch, &id, 1, n_pos);
        n_tokens = 1;
    }
    for (size_t i = 0; i < out.size(); ++i) printf(i ? ",%d" : "%d", out[i]);
    printf("\n");

    llama_batch_ext_free(batch);
    llama_sampler_free(smpl);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
