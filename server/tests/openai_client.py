"""The official `openai` Python package as a real client of `inflight serve`.

Run by server/tests/api.rs (`openai_python_client`) when `import openai` works:
    python3 openai_client.py BASE_URL MODEL [API_KEY]
Exits 0 when every check passes; prints what failed otherwise.
"""

import sys

import openai


def main() -> int:
    base_url, model = sys.argv[1], sys.argv[2]
    api_key = sys.argv[3] if len(sys.argv) > 3 else "unused"
    client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=120)

    models = client.models.list()
    assert [m.id for m in models.data] == [model], models

    # Completions, not streamed and streamed: same greedy text.
    c = client.completions.create(model=model, prompt="The capital of France is", max_tokens=8, temperature=0)
    assert c.object == "text_completion", c
    assert len(c.choices) == 1 and c.choices[0].finish_reason in ("stop", "length"), c
    assert c.usage.prompt_tokens > 0 and c.usage.completion_tokens > 0, c.usage
    assert c.usage.total_tokens == c.usage.prompt_tokens + c.usage.completion_tokens, c.usage
    text = c.choices[0].text
    streamed, finish = "", None
    for chunk in client.completions.create(model=model, prompt="The capital of France is", max_tokens=8, temperature=0, stream=True):
        streamed += chunk.choices[0].text
        finish = chunk.choices[0].finish_reason or finish
    assert streamed == text, (streamed, text)
    assert finish == c.choices[0].finish_reason, finish

    # Chat, not streamed and streamed (with usage).
    msgs = [{"role": "user", "content": "What is 2 + 2?"}]
    r = client.chat.completions.create(model=model, messages=msgs, max_tokens=8, temperature=0, seed=1)
    assert r.object == "chat.completion", r
    assert r.choices[0].message.role == "assistant", r
    content = r.choices[0].message.content
    parts, finish, usage, roles = [], None, None, []
    stream = client.chat.completions.create(
        model=model, messages=msgs, max_tokens=8, temperature=0, seed=1, stream=True, stream_options={"include_usage": True}
    )
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for ch in chunk.choices:
            if ch.delta.role:
                roles.append(ch.delta.role)
            if ch.delta.content:
                parts.append(ch.delta.content)
            finish = ch.finish_reason or finish
    assert "".join(parts) == content, (parts, content)
    assert roles == ["assistant"], roles
    assert finish == r.choices[0].finish_reason, finish
    assert usage is not None and usage.completion_tokens == r.usage.completion_tokens, (usage, r.usage)

    # n sampled choices with a seed, and log-probs.
    r = client.chat.completions.create(model=model, messages=msgs, max_tokens=4, temperature=0.8, n=2, seed=7, logprobs=True, top_logprobs=2)
    assert sorted(ch.index for ch in r.choices) == [0, 1], r
    for ch in r.choices:
        assert ch.logprobs is not None and len(ch.logprobs.content) > 0, ch
        assert len(ch.logprobs.content[0].top_logprobs) == 2, ch.logprobs.content[0]

    # Errors surface as the SDK's exceptions with the server's status and message.
    try:
        client.completions.create(model=model, prompt="x", max_tokens=4, temperature=-1)
        raise AssertionError("temperature -1 was accepted")
    except openai.BadRequestError as e:
        assert e.status_code == 400 and "temperature" in str(e), e
    try:
        client.completions.create(model="no-such-model", prompt="x", max_tokens=4)
        raise AssertionError("an unknown model was accepted")
    except openai.NotFoundError as e:
        assert e.status_code == 404, e
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except AssertionError as e:
        print(f"openai client check failed: {e!r}", file=sys.stderr)
        sys.exit(1)
