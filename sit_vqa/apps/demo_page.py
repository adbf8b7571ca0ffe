"""The demo's web page (Gradio): upload an image or pick a bundled sample, ask, read description and answer.

Started by `python -m sit_vqa.apps.demo --checkpoint DIR --serve`. Local and offline by design: it binds to
127.0.0.1 unless told otherwise, opens a share link only with --share, sends no analytics, and its theme
uses the system's fonts (gradio's font defaults may fetch web fonts). Uploads live in a temporary
directory that is removed when the server stops (GRADIO_TEMP_DIR, set before gradio is imported).
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # read when gradio is imported: no phoning home

import json  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import gradio as gr  # noqa: E402

from sit_vqa.apps.image_input import load_image  # noqa: E402
from sit_vqa.modeling.generation import GenerationSettings  # noqa: E402
from sit_vqa.errors import SitVqaError  # noqa: E402

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "data" / "sample"
SAMPLE_QUESTIONS = SAMPLE_DIR / "v2_OpenEnded_mscoco_val2014_questions.json"
NUM_EXAMPLES = 4
SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif"]
SYSTEM_MONO_FONTS = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"]


def sample_examples(count: int = NUM_EXAMPLES) -> list[list[str]]:
    """[image path, question] of the first `count` bundled val images with their first question (none if the
    sample data is not beside the package, as in a wheel install)."""
    if not SAMPLE_QUESTIONS.is_file():
        return []
    examples, seen = [], set()
    for question in json.loads(SAMPLE_QUESTIONS.read_text(encoding="utf-8"))["questions"]:
        path = SAMPLE_DIR / "val2014" / f"COCO_val2014_{question['image_id']:012d}.jpg"
        if question["image_id"] not in seen and path.is_file():
            seen.add(question["image_id"])
            examples.append([str(path), question["question"]])
        if len(examples) == count:
            break
    return examples


def build_page(demo, prompt: str = "auto", options: GenerationSettings = GenerationSettings()) -> gr.Blocks:
    """The page's layout and its one event, `ask` (also the API name gradio_client calls)."""

    def ask(image, question, prompt, max_new_tokens, num_beams, do_sample, temperature, top_p,
            repetition_penalty):
        # The events run with preprocess=False: gr.Image would open the upload with PIL before this runs,
        # so a non-image, a truncated file or a decompression bomb would fail there with PIL's message.
        # Unprocessed, `image` is the upload's file data ({"path", "orig_name", ...}), already checked by
        # gradio to lie in its upload folder; load_image checks the rest, with messages that say what to do.
        if not image or not image.get("path"):
            raise _rejected("upload an image first (or pick one of the examples)")
        try:
            settings = GenerationSettings(
                max_new_tokens=int(max_new_tokens), num_beams=int(num_beams), do_sample=bool(do_sample),
                temperature=float(temperature), top_p=float(top_p), repetition_penalty=float(repetition_penalty),
            )
            name = image.get("orig_name") or Path(image["path"]).name  # the name the person uploaded
            pixels = load_image(image["path"], name=name, reduce_above=demo.reduce_above)
            for reply in demo.stream(pixels, question, prompt=prompt, options=settings):
                yield reply.description or "", reply.answer, reply.raw
        except SitVqaError as error:  # shown in the page; the server goes on serving
            raise _rejected(str(error)) from None

    mode = demo.trained_mode or "none (zero-shot)"
    with gr.Blocks(title="sit-vqa demo", analytics_enabled=False, delete_cache=(600, 3600)) as page:
        gr.Markdown(f"## sit-vqa: describe, then answer\nCheckpoint `{demo.source}` (trained mode: {mode}). "
                    "Upload an image, ask a question about it.")
        with gr.Row():
            with gr.Column():
                image = gr.Image(label="Image", type="filepath", sources=["upload", "clipboard"],
                                 elem_id="image")
                question = gr.Textbox(label="Question", placeholder="What color is the shape?", elem_id="question")
                button = gr.Button("Ask", variant="primary", elem_id="ask")
                with gr.Accordion("Generation settings", open=False):
                    prompt_choice = gr.Radio(["auto", "sit", "baseline"], value=prompt, label="Prompt",
                                             info=f"auto: this checkpoint's own ({demo.default_prompt()})")
                    max_new_tokens = gr.Slider(1, 256, value=options.max_new_tokens, step=1, label="Max new tokens")
                    num_beams = gr.Slider(1, 8, value=options.num_beams, step=1, label="Beams (1: greedy)")
                    do_sample = gr.Checkbox(value=options.do_sample, label="Sample")
                    temperature = gr.Slider(0.05, 2.0, value=options.temperature, step=0.05, label="Temperature")
                    top_p = gr.Slider(0.05, 1.0, value=options.top_p, step=0.05, label="Top-p")
                    repetition_penalty = gr.Slider(1.0, 2.0, value=options.repetition_penalty, step=0.05,
                                                   label="Repetition penalty")
            with gr.Column():
                description = gr.Textbox(label="Description", lines=4, interactive=False, elem_id="description")
                answer = gr.Textbox(label="Answer", interactive=False, elem_id="answer")
                with gr.Accordion("Raw output", open=False):
                    raw = gr.Textbox(label="Generated text", lines=4, interactive=False, elem_id="raw")
        examples = sample_examples()
        if examples:
            gr.Examples(examples, inputs=[image, question], label="Bundled sample images")
        inputs = [image, question, prompt_choice, max_new_tokens, num_beams, do_sample, temperature, top_p,
                  repetition_penalty]
        outputs = [description, answer, raw]
        button.click(ask, inputs, outputs, api_name="ask", preprocess=False)
        question.submit(ask, inputs, outputs, api_name=False, preprocess=False)
    return page


def _rejected(message: str) -> gr.Error:
    """The error shown in the page for a request the demo refuses, logged as one line on the server (gradio
    would print a traceback for each: 259 lines for 7 bad uploads)."""
    print(f"request refused: {message}", file=sys.stderr, flush=True)
    return gr.Error(message, print_exception=False)


def serve(demo, *, host: str = "127.0.0.1", port: int = 7860, share: bool = False,
          prompt: str = "auto", options: GenerationSettings = GenerationSettings()) -> None:
    """Serve the page until interrupted (Ctrl-C or SIGTERM); the upload directory is removed on the way out."""
    with tempfile.TemporaryDirectory(prefix="sit_vqa_demo_uploads_") as uploads:
        # Uploads go under GRADIO_TEMP_DIR; gradio reads it when a component is created, i.e. below.
        os.environ["GRADIO_TEMP_DIR"] = uploads
        page = build_page(demo, prompt, options)
        # SIGTERM (a service manager, a test) would kill the process without running the cleanup above
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        print(f"uploads are kept in {uploads} until the server stops", flush=True)
        theme = gr.themes.Default(font=SYSTEM_FONTS, font_mono=SYSTEM_MONO_FONTS)
        try:
            # one generation at a time: a CPU has no room for two, and the model is shared
            page.queue(default_concurrency_limit=1).launch(
                server_name=host, server_port=port, share=share, theme=theme, ssr_mode=False,
                allowed_paths=[str(SAMPLE_DIR / "val2014")], show_error=True, footer_links=["api"],
            )
        finally:
            page.close()
