"""Drives Troupe's OpenAI-compatible API with the official `openai` package, as a real
program would. Run by tests/openai_api.rs with OPENAI_BASE_URL (http://127.0.0.1:PORT/v1)
and OPENAI_API_KEY (the gateway token) set. Prints a JSON summary on stdout and exits
non-zero, naming the mismatch on stderr, if anything differs from what Troupe promises.
"""

import json
import re
import sys
import urllib.request

import openai

MESSAGE = "hello from the python sdk"
EXPECTED = f"echo: {MESSAGE}"


def check(cond, what):
    if not cond:
        print(f"openai_client.py: {what}", file=sys.stderr)
        sys.exit(1)


def status_error(call):
    """Runs `call`, which must raise an APIStatusError; returns its status and code."""
    try:
        call()
    except openai.APIStatusError as err:
        return {"status": err.status_code, "code": err.code, "type": err.type}
    check(False, "expected an HTTP error, got a success")


def main():
    client = openai.OpenAI(max_retries=0)
    summary = {"sdk_version": openai.__version__}

    models = [m.id for m in client.models.list()]
    summary["models"] = models
    check("main" in models, f"models.list() lacks main: {models}")

    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": MESSAGE},
    ]
    completion = client.chat.completions.create(
        model="main", messages=messages, temperature=0.2, max_tokens=64, user="sdk-test"
    )
    content = completion.choices[0].message.content
    summary["content"] = content
    summary["finish_reason"] = completion.choices[0].finish_reason
    check(content == EXPECTED, f"completion content {content!r} != {EXPECTED!r}")
    check(completion.choices[0].finish_reason == "stop", "finish_reason is not stop")

    parts = []
    finish = None
    for chunk in client.chat.completions.create(model="troupe/main", messages=messages, stream=True):
        check(chunk.object == "chat.completion.chunk", f"unexpected chunk {chunk!r}")
        choice = chunk.choices[0]
        if choice.delta.content:
            parts.append(choice.delta.content)
        if choice.finish_reason:
            finish = choice.finish_reason
    streamed = "".join(parts)
    summary["streamed"] = streamed
    summary["stream_chunks"] = len(parts)
    check(streamed == EXPECTED, f"streamed content {streamed!r} != {EXPECTED!r}")
    check(finish == "stop", f"stream finish_reason {finish!r} != 'stop'")

    failing = [{"role": "user", "content": "!fail boom"}]
    summary["failure"] = status_error(
        lambda: client.chat.completions.create(model="main", messages=failing)
    )
    check(summary["failure"]["status"] == 502, f"a failing run gave {summary['failure']}")

    try:
        for _ in client.chat.completions.create(model="main", messages=failing, stream=True):
            pass
        check(False, "a failing streamed run raised nothing")
    except openai.APIError as err:
        summary["stream_failure"] = err.message
    check("boom" in summary["stream_failure"], f"stream error {summary['stream_failure']!r}")

    summary["unknown_model"] = status_error(
        lambda: client.chat.completions.create(model="nobody", messages=messages)
    )
    check(summary["unknown_model"]["code"] == "model_not_found", f"{summary['unknown_model']}")

    # An image as a data-URL content part; the reply's [IMAGE:] marker comes back as a
    # markdown link to GET /api/files/..., which serves the file with the same token.
    pixel = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAACklEQVR4nGMAAQAABQABDQottAAAAABJRU5ErkJggg=="
    with_image = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "see [IMAGE:pic.png]"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{pixel}"}},
            ],
        }
    ]
    completion = client.chat.completions.create(model="main", messages=with_image)
    summary["image_reply"] = completion.choices[0].message.content
    link = re.search(r"!\[pic\.png\]\((http[^)]+)\)", summary["image_reply"] or "")
    check(link is not None, f"no image link in {summary['image_reply']!r}")
    request = urllib.request.Request(
        link.group(1), headers={"Authorization": f"Bearer {client.api_key}"}
    )
    with urllib.request.urlopen(request) as res:
        summary["image_download"] = {
            "status": res.status,
            "type": res.headers.get("content-type"),
            "bytes": len(res.read()),
        }
    streamed = "".join(
        chunk.choices[0].delta.content or ""
        for chunk in client.chat.completions.create(model="main", messages=with_image, stream=True)
    )
    summary["image_streamed"] = streamed
    check(link.group(1) in streamed, f"streamed reply lacks the link: {streamed!r}")
    remote = [
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": "https://example.com/x.png"}}],
        }
    ]
    summary["remote_image"] = status_error(
        lambda: client.chat.completions.create(model="main", messages=remote)
    )

    stranger = openai.OpenAI(api_key="not-the-token", max_retries=0)
    summary["unauthorized"] = status_error(lambda: stranger.models.list())
    check(summary["unauthorized"]["code"] == "invalid_api_key", f"{summary['unauthorized']}")

    print(json.dumps(summary))


if __name__ == "__main__":
    main()
