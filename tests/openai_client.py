"""The official `openai` Python client against `dcoder serve` (tests/serve.rs runs this).

Usage: python openai_client.py BASE_URL   (OPENAI_API_KEY holds the server's key)
Prints one JSON object: the whole and the streamed answer, the model ids, and the status a
wrong key gets.
"""

import json
import sys

import openai

base = sys.argv[1]
client = openai.OpenAI(base_url=base)
messages = [{"role": "user", "content": "hello"}]

whole = client.chat.completions.create(model="llada-tiny", messages=messages, user="test")
assert whole.choices[0].finish_reason in ("stop", "length"), whole
assert whole.usage.prompt_tokens > 0, whole.usage

streamed = ""
for chunk in client.chat.completions.create(
    model="llada-tiny", messages=messages, stream=True, stream_options={"include_usage": True}
):
    if chunk.choices and chunk.choices[0].delta.content:
        streamed += chunk.choices[0].delta.content

# Mercury's extension through the same client: every step's whole canvas.
canvases = []
for chunk in client.chat.completions.create(
    model="llada-tiny", messages=messages, stream=True, extra_body={"diffusing": True}
):
    meta = (chunk.model_extra or {}).get("diffusion_meta")
    if meta and chunk.choices and chunk.choices[0].delta.content is not None:
        canvases.append(chunk.choices[0].delta.content)
assert len(canvases) > 1, canvases
assert canvases[-1] == whole.choices[0].message.content, canvases

text = client.completions.create(model="llada-tiny", prompt="def add(a, b):")
assert text.choices[0].text is not None

try:
    openai.OpenAI(base_url=base, api_key="wrong").models.list()
    wrong_key = 200
except openai.AuthenticationError as e:
    wrong_key = e.status_code

print(
    json.dumps(
        {
            "whole": whole.choices[0].message.content,
            "streamed": streamed,
            "models": [m.id for m in client.models.list().data],
            "wrong_key": wrong_key,
        }
    )
)
