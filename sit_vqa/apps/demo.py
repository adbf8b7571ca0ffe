"""Ask a trained checkpoint about an image: a Python API, a command line and a local web page.

    python -m sit_vqa.apps.demo --checkpoint runs/quickstart/final --image data/sample/val2014/COCO_val2014_000000325422.jpg \\
        --question "What color is the shape?"        # prints the description and the answer
    python -m sit_vqa.apps.demo --checkpoint runs/quickstart --image photo.jpg   # questions from stdin, one per line
    python -m sit_vqa.apps.demo --checkpoint runs/quickstart --serve [--host 127.0.0.1] [--port 7860] [--share]

In Python (the model is loaded once; `ask` takes a path, a PIL image or the bytes of an image file):

    from sit_vqa.apps.demo import VqaDemo
    demo = VqaDemo.load("runs/quickstart")          # a run dir, a checkpoint-N / final, or an exported model
    reply = demo.ask("photo.jpg", "What is on the table?")
    reply.description, reply.answer, reply.raw

The prompt follows the checkpoint's training mode (the SIT instruction for sit/mixed runs, the baseline one
otherwise) unless `prompt="sit"` or `"baseline"` is passed. Prompt building, padding, decoding and the
"Description:/Answer:" split are the evaluation's own (SampleTransform, decode_generated, parse_sit_output),
so an answer here is what `evaluate.py` would have scored for the same image and question.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from PIL import Image
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from sit_vqa.data.prompts import PROMPTS, parse_sit_output, resolve_prompt
from sit_vqa.apps.export import EXPORT_MANIFEST_NAME
from sit_vqa.apps.image_input import ImageSource, load_image  # noqa: F401  (the demo's API)
from sit_vqa.errors import InputError, SitVqaError
from sit_vqa.modeling.checkpoint import TrainedSettings, load_checkpoint
from sit_vqa.modeling.generation import GenerationInputs, GenerationSettings, generate_batch
from sit_vqa.modeling.arguments import ModelArguments
from sit_vqa.modeling.families import family_names, model_family
from sit_vqa.modeling.loading import load_base_model

MAX_QUESTION_CHARS = 1000  # checked before tokenizing, so a pasted book is refused at once


# load_image lives in image_input, which the web page imports too: the page never imports this module, so the two
# form no import loop. An image, question or setting the demo cannot use is an InputError (sit_vqa.errors); the
# demo asks with the one generation-settings type, GenerationSettings (the evaluation's defaults: greedy, 64
# new tokens).


@dataclass(frozen=True)
class Reply:
    description: str | None  # None when the output has no "Description:" (a baseline checkpoint)
    answer: str
    raw: str  # the generated text, before the split
    prompt: str  # the instruction the model was given


class VqaDemo:
    """A checkpoint loaded once, answering questions about images."""

    def __init__(self, model, processor, trained: TrainedSettings, *, source: Path):
        self.model = model.eval()
        self.processor = processor
        self.trained = trained
        self.source = source
        self.inputs = GenerationInputs(model, processor, trained.generation())  # made as in training
        size = processor.image_processor.size
        self.reduce_above = 4 * _model_image_side(size)  # see load_image

    @property
    def trained_mode(self) -> str | None:
        return self.trained.mode

    @classmethod
    def load(cls, path: str | Path, device: str | None = None, *, allow_partial: bool = False,
             base_model: str | Path | None = None, dtype: torch.dtype | None = None) -> VqaDemo:
        """From a run dir, a checkpoint dir (checkpoint-N, final) or a model directory written by sit_vqa.apps.export.
        allow_partial: load a weights file that lacks some trained tensors; base_model: the base model to
        rebuild on instead of the one the checkpoint names (a copy elsewhere); dtype: of the frozen weights
        (default: a checkpoint's as trained, an exported model's float32)."""
        path = Path(path)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if not path.is_dir():
            raise InputError(f"checkpoint directory not found: {path}; pass a run directory, a checkpoint-N "
                                 "or final directory written by train.py, or a model exported by sit_vqa.apps.export")
        if (path / "config.json").is_file():
            return cls._load_exported(path, device, dtype or torch.float32)
        loaded = load_checkpoint(path, device=device, dtype=dtype, allow_partial=allow_partial, base_model=base_model)
        if not model_family(loaded.trained.model_type).answers_images:
            raise InputError(f"{loaded.directory}: a {loaded.trained.model_type!r} checkpoint has no image input; "
                                 "the demo needs an image model (model_type "
                                 f"{family_names(lambda family: family.answers_images)})")
        return cls(loaded.model, loaded.processor, loaded.trained, source=loaded.directory)

    @classmethod
    def _load_exported(cls, path: Path, device: str, dtype: torch.dtype) -> VqaDemo:
        """An exported model (or any save_pretrained InstructBLIP directory: then asked zero-shot, baseline)."""
        info_path = path / EXPORT_MANIFEST_NAME
        info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}
        trained = TrainedSettings.from_dict(info.get("trained", {}))
        args = ModelArguments(model_type=trained.model_type, model_name_or_path=str(path), local_files_only=True)
        model, processor = load_base_model(args, dtype=dtype, device=device)
        return cls(model.eval(), processor, trained, source=path)

    @property
    def tokenizer(self):
        return self.inputs.tokenizer

    def default_prompt(self) -> str:
        """"sit" or "baseline": the instruction the checkpoint was trained to follow."""
        return self.trained.prompt

    def instruction(self, question: str, prompt: str = "auto") -> str:
        """The instruction for `question`, rendered with the checkpoint's templates; checks the question."""
        if not isinstance(question, str) or not question.strip():
            raise InputError("the question is empty; type a question about the image")
        question = question.strip()
        if len(question) > MAX_QUESTION_CHARS:
            raise InputError(f"the question is {len(question):,} characters long; ask in at most "
                                 f"{MAX_QUESTION_CHARS:,}")
        kind = resolve_prompt(prompt or "auto", self.trained.mode)
        instruction = self.trained.templates.render(kind, question=question)[0]
        # SampleTransform cuts long instructions from the left, which would drop the task sentence silently
        length = len(self.tokenizer(instruction)["input_ids"])
        limit = self.trained.max_instruction_length
        if length > limit:
            raise InputError(f"the question is too long: with the instruction it is {length} tokens, and this "
                                 f"checkpoint reads at most {limit} (its max_instruction_length); shorten it")
        return instruction

    def ask(self, image: ImageSource, question: str, *, prompt: str = "auto",
            options: GenerationSettings = GenerationSettings()) -> Reply:
        """Describe (SIT checkpoints) and answer: one image, one question."""
        return self.ask_many([(image, question)], prompt=prompt, options=options)[0]

    def ask_many(self, pairs: Sequence[tuple[ImageSource, str]], *, prompt: str = "auto",
                 options: GenerationSettings = GenerationSettings(), batch_size: int = 8) -> list[Reply]:
        """One Reply per (image, question) pair, in order, generated `batch_size` at a time."""
        records = [self._record(image, question, prompt, index) for index, (image, question) in enumerate(pairs)]
        replies: list[Reply] = []
        for start in range(0, len(records), batch_size):
            chunk = records[start:start + batch_size]
            raw_texts = self._generate(self._batch(chunk), options)
            replies += [_reply(text, record["instruction"]) for text, record in zip(raw_texts, chunk)]
        return replies

    def stream(self, image: ImageSource, question: str, *, prompt: str = "auto",
               options: GenerationSettings = GenerationSettings()) -> Iterator[Reply]:
        """Replies for the text generated so far, growing token by token; the last one equals `ask`'s.

        Beam search keeps several candidates until the end, so with num_beams > 1 only the final reply comes.
        """
        record = self._record(image, question, prompt, 0)
        batch = self._batch([record])
        if options.num_beams > 1:
            yield _reply(self._generate(batch, options)[0], record["instruction"])
            return
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        abandoned = threading.Event()  # set when the caller stops reading (a closed page): stop generating too
        result: dict[str, Any] = {}

        def generate_in_background():
            try:
                result["texts"] = self._generate(batch, options, streamer=streamer,
                                                 stopping_criteria=StoppingCriteriaList([_StopWhen(abandoned)]))
            except BaseException as error:  # re-raised below, in the caller's thread
                result["error"] = error
                streamer.end()  # else the loop below would wait for text forever

        thread = threading.Thread(target=generate_in_background, daemon=True)
        thread.start()
        try:
            text = ""
            for piece in streamer:
                text += piece
                yield _reply(text, record["instruction"])
        finally:
            abandoned.set()
            thread.join()
        if "error" in result:
            raise result["error"]
        # the final text is decoded the evaluation's way (the streamer's piecewise decoding may space differently)
        yield _reply(result["texts"][0], record["instruction"])

    def _record(self, image: ImageSource, question: str, prompt: str, index: int) -> dict[str, Any]:
        try:
            image = load_image(image, reduce_above=self.reduce_above)
            return {"instruction": self.instruction(question, prompt), "image": image, "id": index}
        except InputError as error:
            raise InputError(f"pair {index}: {error}" if index else str(error)) from None

    def _batch(self, records: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return self.inputs.batch(records)

    def _generate(self, batch: dict[str, torch.Tensor], options: GenerationSettings, **extra) -> list[str]:
        return generate_batch(self.model, self.tokenizer, batch, options, **extra)


def _model_image_side(size) -> int:
    """The image side the processor resizes to: height/width (InstructBLIP, SigLIP), shortest_edge (CLIP) or
    longest_edge (Idefics3)."""
    sides = [size.get(key) for key in ("height", "width", "shortest_edge", "longest_edge")]
    return min(side for side in sides if side)


class _StopWhen(StoppingCriteria):
    """Stops generation once `event` is set."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


def _reply(text: str, instruction: str) -> Reply:
    parsed = parse_sit_output(text)
    return Reply(parsed.description, parsed.answer, text, instruction)


# ----------------------------------------------------------------------------------------- command line


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sit_vqa.apps.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True,
                        help="run directory, checkpoint-N / final directory, or a model exported by sit_vqa.apps.export")
    parser.add_argument("--image", help="image file to ask about (not with --serve)")
    parser.add_argument("--question", help="the question; without it, questions are read from stdin, one per line")
    parser.add_argument("--serve", action="store_true", help="start the web page instead")
    parser.add_argument("--host", default="127.0.0.1", help="address the page listens on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=7860, help="(default: %(default)s)")
    parser.add_argument("--share", action="store_true", help="also open a public Gradio share link (off by default)")
    parser.add_argument("--prompt", choices=PROMPTS, default="auto",
                        help="instruction: auto follows the checkpoint's training mode (default: %(default)s)")
    parser.add_argument("--device", help="e.g. cuda, cuda:1, cpu (default: cuda if available, else cpu)")
    parser.add_argument("--base-model", help="the checkpoint's base model (a save_pretrained directory or hub id), "
                        "when it is not where the checkpoint says")
    parser.add_argument("--allow-partial-load", action="store_true",
                        help="load a checkpoint whose weights file lacks some trained tensors (they keep the base "
                        "model's values)")
    defaults = GenerationSettings()
    generation = parser.add_argument_group("generation (defaults: the evaluation's)")
    generation.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens)
    generation.add_argument("--num-beams", type=int, default=defaults.num_beams, help="1: greedy")
    generation.add_argument("--do-sample", action="store_true", help="sample instead of greedy / beam search")
    generation.add_argument("--temperature", type=float, default=defaults.temperature, help="with --do-sample")
    generation.add_argument("--top-p", type=float, default=defaults.top_p, help="with --do-sample")
    generation.add_argument("--repetition-penalty", type=float, default=defaults.repetition_penalty)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2: bad input, with the message on stderr)."""
    parser = make_parser()
    args = parser.parse_args(argv)
    transformers.utils.logging.disable_progress_bar()  # "Loading weights" bars would clutter the answers
    if args.serve == bool(args.image):
        parser.error("pass --image (and --question) to ask from the command line, or --serve for the web page")
    try:
        options = GenerationSettings(
            max_new_tokens=args.max_new_tokens, num_beams=args.num_beams, do_sample=args.do_sample,
            temperature=args.temperature, top_p=args.top_p, repetition_penalty=args.repetition_penalty,
        )
        if args.serve:
            demo_page = _import_demo_page()  # before the model load: a missing extra fails at once
            demo_page.serve(_load(args), host=args.host, port=args.port,
                            share=args.share, prompt=args.prompt, options=options)
            return 0
        image = load_image(args.image)  # before the (slow) model load: a wrong path fails at once
        demo = _load(args)
        if args.question is not None:
            _print_reply(demo.ask(image, args.question, prompt=args.prompt, options=options))
            return 0
        return _interactive(demo, image, args.prompt, options)
    except SitVqaError as error:  # bad image, question, settings or checkpoint: the message says what to fix
        print(f"error: {error}", file=sys.stderr)
        return 2


def _import_demo_page():
    """sit_vqa.apps.demo_page; gradio (the `demo` extra) is needed for the page only, and takes seconds to import."""
    try:
        from sit_vqa.apps import demo_page
    except ImportError as error:
        raise SitVqaError(
            f"--serve needs gradio, from the `demo` extra, and it does not import here ({error}). Install it with "
            'pip install -e ".[demo]" (from a clone; pip install "sit-vqa[demo]" otherwise), or ask from the '
            "command line with --image and --question"
        ) from error
    return demo_page


def _load(args: argparse.Namespace) -> VqaDemo:
    return VqaDemo.load(args.checkpoint, args.device, allow_partial=args.allow_partial_load, base_model=args.base_model)


def _interactive(demo: VqaDemo, image: Image.Image, prompt: str, options: GenerationSettings) -> int:
    """Questions about one image, one per line, until end of input; a bad question is reported, not fatal."""
    status = 0
    if sys.stdin.isatty():
        print("Ask about the image, one question per line (Ctrl-D to stop).", file=sys.stderr)
    for line in sys.stdin:
        if not line.strip():  # an empty line is a person pressing Enter, not a question
            continue
        try:
            _print_reply(demo.ask(image, line.strip(), prompt=prompt, options=options))
        except InputError as error:
            print(f"error: {error}", file=sys.stderr)
            status = 2
        sys.stdout.flush()
    return status


def _print_reply(reply: Reply) -> None:
    if reply.description is not None:
        print(f"description: {reply.description}")
    print(f"answer: {reply.answer}")


if __name__ == "__main__":
    sys.exit(main())
