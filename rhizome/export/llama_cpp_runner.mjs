// Runs a GGUF with the real llama.cpp (node-llama-cpp's prebuilt binaries), for rhizome/export/llama_cpp.py.
// One JSON request per line on stdin, one JSON answer per line on stdout:
//   {"op": "evaluate", "tokens": [...], "max_tokens": 64}
//       greedy continuation of exact token ids: {"tokens": [...], "first_token_ms": ..., "total_ms": ...}
//   {"op": "chat", "system": "...", "user": "...", "max_tokens": 64}
//       one greedy turn through the GGUF's own chat template (rendered by node-llama-cpp's Jinja wrapper):
//       {"tokens": [...], "text": "...", "stop_reason": "eogToken" | "maxTokens" | ..., "prompt": "..."}
import readline from "node:readline";
import {getLlama, LlamaChatSession, JinjaTemplateChatWrapper} from "node-llama-cpp";

const [modelPath, threadsArg] = process.argv.slice(2);
const threads = Number(threadsArg || 2);
const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
const model = await llama.loadModel({modelPath});
const context = await model.createContext({contextSize: 2048, threads, batchSize: 512});
const sequence = context.getSequence();

async function evaluate({tokens, max_tokens}) {
    await sequence.clearHistory();
    const out = [];
    const start = performance.now();
    let first = null;
    for await (const token of sequence.evaluate(tokens, {temperature: 0})) {
        if (first === null) first = performance.now() - start;
        out.push(token);
        if (out.length >= max_tokens || model.isEogToken(token)) break;
    }
    return {tokens: out, first_token_ms: first, total_ms: performance.now() - start};
}

async function chat({system, user, max_tokens}) {
    await sequence.clearHistory();
    const template = model.fileInfo.metadata.tokenizer.chat_template;
    const chatWrapper = new JinjaTemplateChatWrapper({template});
    const session = new LlamaChatSession({contextSequence: sequence, chatWrapper, systemPrompt: system,
                                          autoDisposeSequence: false});
    const tokens = [];
    const result = await session.promptWithMeta(user, {temperature: 0, maxTokens: max_tokens,
                                                       onToken: (chunk) => tokens.push(...chunk)});
    const prompt = chatWrapper.generateContextState({chatHistory: [
        {type: "system", text: system}, {type: "user", text: user}, {type: "model", response: []}]})
        .contextText.toString();
    session.dispose({disposeSequence: false});
    return {tokens, text: result.responseText, stop_reason: result.stopReason, prompt};
}

const ops = {evaluate, chat};
process.stdout.write(JSON.stringify({ready: true}) + "\n");
for await (const line of readline.createInterface({input: process.stdin})) {
    if (!line.trim()) continue;
    let answer;
    try {
        const request = JSON.parse(line);
        answer = await ops[request.op](request);
    } catch (error) {
        answer = {error: String(error && error.stack || error)};
    }
    process.stdout.write(JSON.stringify(answer) + "\n");
}
await context.dispose();
await model.dispose();
