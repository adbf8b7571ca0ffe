"""Generate the small evaluation samples in the official GQA, xGQA, OK-VQA v1.1 and XQuAD formats.

    python -m sit_vqa.samples.eval_samples --out data

writes (byte-identical on every run; tests/samples/test_eval_samples.py checks the committed copies):

    data/gqa_sample/testdev_balanced_questions.json     GQA questions (object keyed by question id, with types)
    data/gqa_sample/images/<imageId>.jpg                 the pictures they ask about
    data/xgqa_sample/testdev_balanced_questions_<lang>.json   the same questions in en bn de id ko pt ru zh
    data/okvqa_sample/OpenEnded_mscoco_val2014_questions.json + mscoco_val2014_annotations.json
                                                         OK-VQA v1.1 format, about data/sample/val2014 images
    data/xquad_sample/xquad.<lang>.json                  SQuAD v1.1 format, en de zh, same question ids

The pictures are the scenes of `sit_vqa.samples.scenes` (a plain background and 1-5 coloured shapes), drawn by its
functions; every answer is read off the scene. The questions come from a few templates over a closed
vocabulary (9 colours, 5 shapes) with hand-written translations, so xGQA and XQuAD hold real translations
of the same questions. As in xGQA, answers stay English in every language; XQuAD contexts and answers are
translated, as in XQuAD.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from collections import Counter
from pathlib import Path

from sit_vqa.samples import scenes as sample
from sit_vqa.samples.scenes import Scene

SEED = 0
GQA_IMAGES = 8
OKVQA_IMAGES = 10  # the first val2014 scenes of data/sample
XQUAD_PICTURES = 5
XGQA_LANGUAGES = ("en", "bn", "de", "id", "ko", "pt", "ru", "zh")
XQUAD_LANGUAGES = ("en", "de", "zh")

COLORS = ("red", "green", "blue", "yellow", "purple", "orange", "white", "gray", "black")
KINDS = ("circle", "square", "triangle", "diamond", "star")

# Colour words as each template needs them: predicative ("is red") everywhere, except ru (genitive, "красного
# цвета", which agrees with no noun) and pt (feminine, agreeing with "cor" in "de cor vermelha").
COLOR_WORDS = {
    "en": COLORS,
    "bn": ("লাল", "সবুজ", "নীল", "হলুদ", "বেগুনি", "কমলা", "সাদা", "ধূসর", "কালো"),
    "de": ("rot", "grün", "blau", "gelb", "lila", "orange", "weiß", "grau", "schwarz"),
    "id": ("merah", "hijau", "biru", "kuning", "ungu", "oranye", "putih", "abu-abu", "hitam"),
    "ko": ("빨간색", "초록색", "파란색", "노란색", "보라색", "주황색", "흰색", "회색", "검은색"),
    "pt": ("vermelha", "verde", "azul", "amarela", "roxa", "laranja", "branca", "cinza", "preta"),
    "ru": ("красного", "зелёного", "синего", "жёлтого", "фиолетового", "оранжевого", "белого", "серого", "чёрного"),
    "zh": ("红色", "绿色", "蓝色", "黄色", "紫色", "橙色", "白色", "灰色", "黑色"),
}

# Shape nouns in the forms the templates use: def(inite), indef(inite) and bare; ko: topic (은/는) and subject
# (이/가) particles, which depend on the noun's last sound. A missing form is the bare noun.
KIND_WORDS = {
    "en": {k: {"def": f"the {k}", "indef": f"a {k}", "bare": k} for k in KINDS},
    "bn": {k: {"bare": w} for k, w in zip(KINDS, ("বৃত্ত", "বর্গ", "ত্রিভুজ", "রম্বস", "তারা"))},
    "de": {k: {"def": d, "indef": i} for k, d, i in zip(
        KINDS, ("der Kreis", "das Quadrat", "das Dreieck", "die Raute", "der Stern"),
        ("einen Kreis", "ein Quadrat", "ein Dreieck", "eine Raute", "einen Stern"))},
    "id": {k: {"bare": w} for k, w in zip(KINDS, ("lingkaran", "persegi", "segitiga", "belah ketupat", "bintang"))},
    "ko": {k: {"bare": b, "def": t, "indef": s} for k, b, t, s in zip(
        KINDS, ("원", "정사각형", "삼각형", "마름모", "별"), ("원은", "정사각형은", "삼각형은", "마름모는", "별은"),
        ("원이", "정사각형이", "삼각형이", "마름모가", "별이"))},
    "pt": {k: {"def": d, "indef": i} for k, d, i in zip(
        KINDS, ("o círculo", "o quadrado", "o triângulo", "o losango", "a estrela"),
        ("um círculo", "um quadrado", "um triângulo", "um losango", "uma estrela"))},
    "ru": {k: {"bare": w} for k, w in zip(KINDS, ("круг", "квадрат", "треугольник", "ромб", "звезда"))},
    "zh": {k: {"bare": w} for k, w in zip(KINDS, ("圆形", "正方形", "三角形", "菱形", "星形"))},
}

# GQA question templates: name -> (structural, semantic, detailed types), and per language the text. Fields:
# {k[...]} / {k2[...]} a shape in one of its forms, {c} / {c2} a colour.
GQA_TYPES = {
    "query_color": ("query", "attr", "queryAttr"),
    "verify_color": ("verify", "attr", "verifyAttr"),
    "choose_color": ("choose", "attr", "chooseAttr"),
    "background": ("query", "global", "queryGlobal"),
    "exist": ("verify", "obj", "exist"),
    "both": ("logical", "obj", "logicAnd"),
}
GQA_TEMPLATES = {
    "en": {
        "query_color": "What color is {k[def]}?", "verify_color": "Is {k[def]} {c}?",
        "choose_color": "Is {k[def]} {c} or {c2}?", "background": "What color is the background?",
        "exist": "Is there {k[indef]} in the picture?", "both": "Are there both {k[indef]} and {k2[indef]}?",
    },
    "bn": {
        "query_color": "{k[bare]}টি কোন রঙের?", "verify_color": "{k[bare]}টি কি {c}?",
        "choose_color": "{k[bare]}টি কি {c} না {c2}?", "background": "পটভূমি কোন রঙের?",
        "exist": "ছবিতে কি কোনো {k[bare]} আছে?", "both": "ছবিতে কি {k[bare]} এবং {k2[bare]} দুটোই আছে?",
    },
    "de": {
        "query_color": "Welche Farbe hat {k[def]}?", "verify_color": "Ist {k[def]} {c}?",
        "choose_color": "Ist {k[def]} {c} oder {c2}?", "background": "Welche Farbe hat der Hintergrund?",
        "exist": "Gibt es im Bild {k[indef]}?", "both": "Gibt es sowohl {k[indef]} als auch {k2[indef]}?",
    },
    "id": {
        "query_color": "Apa warna {k[bare]} itu?", "verify_color": "Apakah {k[bare]} itu berwarna {c}?",
        "choose_color": "Apakah {k[bare]} itu berwarna {c} atau {c2}?", "background": "Apa warna latar belakangnya?",
        "exist": "Apakah ada {k[bare]} di gambar?", "both": "Apakah ada {k[bare]} dan {k2[bare]} di gambar?",
    },
    "ko": {
        "query_color": "{k[def]} 무슨 색입니까?", "verify_color": "{k[def]} {c}입니까?",
        "choose_color": "{k[def]} {c}입니까, {c2}입니까?", "background": "배경은 무슨 색입니까?",
        "exist": "그림에 {k[indef]} 있습니까?", "both": "그림에 {k[bare]}도 있고 {k2[bare]}도 있습니까?",
    },
    "pt": {
        "query_color": "De que cor é {k[def]}?", "verify_color": "{k[def]} é de cor {c}?",
        "choose_color": "{k[def]} é de cor {c} ou {c2}?", "background": "De que cor é o fundo?",
        "exist": "Há {k[indef]} na imagem?", "both": "Há {k[indef]} e {k2[indef]} na imagem?",
    },
    "ru": {
        "query_color": "Какого цвета {k[bare]}?", "verify_color": "{k[bare]} {c} цвета?",
        "choose_color": "{k[bare]} {c} или {c2} цвета?", "background": "Какого цвета фон?",
        "exist": "Есть ли на картинке {k[bare]}?", "both": "Есть ли на картинке и {k[bare]}, и {k2[bare]}?",
    },
    "zh": {
        "query_color": "{k[bare]}是什么颜色的？", "verify_color": "{k[bare]}是{c}的吗？",
        "choose_color": "{k[bare]}是{c}的还是{c2}的？", "background": "背景是什么颜色的？",
        "exist": "图中有{k[bare]}吗？", "both": "图中既有{k[bare]}又有{k2[bare]}吗？",
    },
}

# XQuAD: a paragraph per picture; each sentence holds the answer of one question at {a}.
XQUAD_SENTENCES = {
    "en": {"background": "The background of picture {n} is {a}.", "color": "The {k} in picture {n} is {a}."},
    "de": {"background": "Der Hintergrund von Bild {n} ist {a}.", "color": "{K} in Bild {n} ist {a}."},
    "zh": {"background": "第{n}张图片的背景是{a}。", "color": "第{n}张图片中的{k}是{a}的。"},
}
XQUAD_QUESTIONS = {
    "en": {"background": "What color is the background of picture {n}?", "color": "What color is the {k} in picture {n}?"},
    "de": {"background": "Welche Farbe hat der Hintergrund von Bild {n}?", "color": "Welche Farbe hat {k} in Bild {n}?"},
    "zh": {"background": "第{n}张图片的背景是什么颜色？", "color": "第{n}张图片中的{k}是什么颜色的？"},
}

# OK-VQA: questions that need knowledge beyond the picture. Answers: (stemmed answer, what annotators typed).
FRUITS = {
    "red": (("apple", "apples"), ("cherry", "cherries"), ("strawberry", "strawberry")),
    "green": (("lime", "limes"), ("pear", "pear"), ("apple", "green apple")),
    "blue": (("blueberry", "blueberries"), ("plum", "plums")),
    "yellow": (("banana", "bananas"), ("lemon", "lemon")),
    "purple": (("grape", "grapes"), ("plum", "plum")),
    "orange": (("orange", "oranges"), ("tangerine", "tangerine")),
}
SIDES = {"square": "4", "triangle": "3", "diamond": "4"}


def _rng(*parts) -> random.Random:
    # A string seed is hashed with SHA-512 by `random`: the same stream on every run and machine.
    return random.Random(":".join(["sit-vqa-eval-samples", str(SEED), *map(str, parts)]))


def _unique_kinds(scene: Scene) -> list[str]:
    """Shapes that occur once, so that "the circle" names exactly one shape."""
    counts = Counter(shape.kind for shape in scene.shapes)
    return [shape.kind for shape in scene.shapes if counts[shape.kind] == 1]


def _color_of(scene: Scene, kind: str) -> str:
    return next(shape.color for shape in scene.shapes if shape.kind == kind)


def _capitalize(text: str) -> str:
    return text[0].upper() + text[1:]


def _forms(language: str, kind: str) -> dict[str, str]:
    words = KIND_WORDS[language][kind]
    bare = words.get("bare", words.get("def"))
    return {"bare": bare, "def": words.get("def", bare), "indef": words.get("indef", bare)}


# ----------------------------------------------------------------------------- GQA and xGQA


def _gqa_questions_for(scene: Scene, rng: random.Random) -> list[tuple[str, dict, str, str]]:
    """(template, fields, answer, fullAnswer) for 3-5 questions about the scene; fields name English words."""
    present = {shape.kind for shape in scene.shapes}
    asked = [("background", {}, scene.background, f"The background is {scene.background}.")]
    unique = _unique_kinds(scene)
    if unique:
        kind = rng.choice(unique)
        color = _color_of(scene, kind)
        other = rng.choice([c for c in COLORS[:6] if c != color])
        asked.append(("query_color", {"k": kind}, color, f"The {kind} is {color}."))
        said = color if rng.random() < 0.5 else other
        verdict = f"Yes, the {kind} is {color}." if said == color else f"No, the {kind} is {color}."
        asked.append(("verify_color", {"k": kind, "c": said}, "yes" if said == color else "no", verdict))
        pair = [color, other] if rng.random() < 0.5 else [other, color]
        asked.append(("choose_color", {"k": kind, "c": pair[0], "c2": pair[1]}, color, f"The {kind} is {color}."))
    kind = rng.choice(KINDS)
    there = kind in present
    asked.append(("exist", {"k": kind}, "yes" if there else "no",
                  f"Yes, there is a {kind}." if there else f"No, there is no {kind}."))
    first, second = rng.sample(KINDS, 2)
    both = first in present and second in present
    asked.append(("both", {"k": first, "k2": second}, "yes" if both else "no",
                  f"{'Yes' if both else 'No'}, there {'are' if both else 'are not'} both a {first} and a {second}."))
    return rng.sample(asked, min(len(asked), rng.randint(3, 5)))


def _question_text(language: str, template: str, fields: dict) -> str:
    values = {}
    for name, word in fields.items():
        if name.startswith("k"):
            values[name] = _forms(language, word)
        else:
            values[name] = COLOR_WORDS[language][COLORS.index(word)]
    return _capitalize(GQA_TEMPLATES[language][template].format(**values))


def _semantic_program(template: str, fields: dict) -> list[dict]:
    """A GQA-style functional program (the `semantic` field), kept small: select, then one operation."""
    kind = fields.get("k", "background")
    operation = {"query_color": "query: color", "verify_color": f"verify color: {fields.get('c')}",
                 "choose_color": f"choose color: {fields.get('c')}|{fields.get('c2')}",
                 "background": "query: color", "exist": "exist: ?", "both": "and: "}[template]
    name, argument = operation.split(": ")
    return [{"operation": "select", "dependencies": [], "argument": kind},
            {"operation": name, "dependencies": [0], "argument": argument}]


def gqa_documents(scenes: list[Scene]) -> dict[str, dict]:
    """language -> GQA questions document (question id -> question), the same ids in every language."""
    documents = {language: {} for language in XGQA_LANGUAGES}
    for number, scene in enumerate(scenes):
        image_id = f"n{scene.image_id}"
        for k, (template, fields, answer, full_answer) in enumerate(_gqa_questions_for(scene, _rng("gqa", number))):
            question_id = str(20_000_000 + number * 100 + k)
            structural, semantic, detailed = GQA_TYPES[template]
            program = _semantic_program(template, fields)
            for language in XGQA_LANGUAGES:
                documents[language][question_id] = {
                    "semantic": program,
                    "entailed": [],
                    "equivalent": [question_id],
                    "question": _question_text(language, template, fields),
                    "imageId": image_id,
                    "isBalanced": True,
                    "groups": {"global": None, "local": f"{detailed}-{fields.get('k', 'background')}"},
                    "answer": answer,
                    "semanticStr": " ".join(f"{op['operation']}: {op['argument']}" for op in program),
                    "annotations": {"answer": {}, "question": {}, "fullAnswer": {}},
                    "types": {"detailed": detailed, "semantic": semantic, "structural": structural},
                    "fullAnswer": full_answer,
                }
    return documents


def gqa_scenes() -> list[Scene]:
    return [sample.make_scene(700_000 + number, _rng("gqa-scene", number)) for number in range(GQA_IMAGES)]


# ----------------------------------------------------------------------------- OK-VQA v1.1


def _okvqa_answers(choices: tuple[tuple[str, str], ...], rng: random.Random) -> list[dict]:
    """Five annotators, each answer listed twice (as in OK-VQA v1.1, 10 answers per question)."""
    answers = []
    for _ in range(5):
        answer, typed = rng.choices(choices, weights=[6] + [3] * (len(choices) - 1))[0]
        raw = rng.choice((typed, typed.capitalize(), answer))
        answers += [{"answer_id": len(answers) + i + 1, "raw_answer": raw, "answer_confidence": "yes",
                     "answer": answer} for i in range(2)]
    return answers


def okvqa_documents(scenes: list[Scene]) -> tuple[dict, dict]:
    """(questions, annotations) documents in the OK-VQA v1.1 layout."""
    questions, annotations = [], []
    for scene in scenes:
        rng = _rng("okvqa", scene.image_id)
        asked = []
        for kind in _unique_kinds(scene):
            color = _color_of(scene, kind)
            asked.append((f"What fruit has the same color as the {kind}?", "eight", FRUITS[color]))
            if kind in SIDES:
                asked.append((f"How many sides does the {kind} have?", "nine", ((SIDES[kind], SIDES[kind]),)))
        for k, (text, question_type, choices) in enumerate(rng.sample(asked, min(2, len(asked)))):
            question_id = scene.image_id * 10 + k
            questions.append({"image_id": scene.image_id, "question": text, "question_id": question_id})
            annotations.append({
                "image_id": scene.image_id, "answer_type": "other", "question_type": question_type,
                "question_id": question_id, "answers": _okvqa_answers(choices, rng), "confidence": rng.randint(3, 5),
            })
    info = {"description": "Synthetic OK-VQA v1.1-format sample made by sit_vqa.samples.eval_samples", "year": 2019}
    license_ = {"url": sample.LICENSE["url"], "name": sample.LICENSE["name"]}
    question_document = {"license": license_, "data_subtype": "val2014", "task_type": "Open-Ended",
                         "questions": questions, "info": info, "data_type": "mscoco"}
    annotation_document = {"license": license_, "data_subtype": "val2014", "annotations": annotations,
                           "info": info, "data_type": "mscoco"}
    return question_document, annotation_document


# ----------------------------------------------------------------------------- XQuAD


def _xquad_paragraph(language: str, number: int, scene: Scene) -> dict:
    facts = [("background", None, scene.background)] + [("color", k, _color_of(scene, k)) for k in _unique_kinds(scene)]
    context, qas = "", []
    for slot, (fact, kind, color) in enumerate(facts[:3]):
        answer = COLOR_WORDS[language][COLORS.index(color)]
        noun = _forms(language, kind)["def" if language == "de" else "bare"] if kind else ""
        fields = {"n": number, "k": noun, "K": _capitalize(noun) if noun else ""}
        before, after = XQUAD_SENTENCES[language][fact].split("{a}")
        context += (" " if context and language != "zh" else "") + before.format(**fields)
        answer_start = len(context)
        context += answer + after.format(**fields)
        question_id = hashlib.sha1(f"xquad-sample:{number}:{slot}".encode()).hexdigest()[:24]
        qas.append({"answers": [{"answer_start": answer_start, "text": answer}], "id": question_id,
                    "question": XQUAD_QUESTIONS[language][fact].format(**fields)})
    return {"context": context, "qas": qas}


def xquad_documents(scenes: list[Scene]) -> dict[str, dict]:
    """language -> SQuAD v1.1 document: two articles of pictures, the same question ids in every language."""
    documents = {}
    for language in XQUAD_LANGUAGES:
        paragraphs = [_xquad_paragraph(language, n + 1, scene) for n, scene in enumerate(scenes[:XQUAD_PICTURES])]
        documents[language] = {"data": [{"title": "Pictures_1", "paragraphs": paragraphs[:3]},
                                        {"title": "Pictures_2", "paragraphs": paragraphs[3:]}], "version": "1.1"}
    return documents


# ----------------------------------------------------------------------------- writing


def _json(document) -> bytes:
    # One fixed layout (insertion order, indent 1, UTF-8 text as is) so that the bytes never vary.
    return (json.dumps(document, indent=1, ensure_ascii=False) + "\n").encode("utf-8")


def sample_files() -> dict[str, bytes]:
    """Relative path (under the data folder) -> bytes of every file of the four samples."""
    scenes = gqa_scenes()
    gqa = gqa_documents(scenes)
    files = {"gqa_sample/testdev_balanced_questions.json": _json(gqa["en"])}
    files.update({f"gqa_sample/images/n{s.image_id}.jpg": sample.encode_jpeg(sample.draw_scene(s)) for s in scenes})
    files.update({f"xgqa_sample/testdev_balanced_questions_{lang}.json": _json(doc) for lang, doc in gqa.items()})
    val_scenes = sample.build_split("val2014", sample.DEFAULT_VAL_IMAGES, sample.DEFAULT_SEED).scenes
    okvqa_questions, okvqa_annotations = okvqa_documents(val_scenes[:OKVQA_IMAGES])
    files["okvqa_sample/OpenEnded_mscoco_val2014_questions.json"] = _json(okvqa_questions)
    files["okvqa_sample/mscoco_val2014_annotations.json"] = _json(okvqa_annotations)
    files.update({f"xquad_sample/xquad.{lang}.json": _json(doc) for lang, doc in xquad_documents(scenes).items()})
    return files


def write_samples(out_dir: str | Path) -> list[Path]:
    written = []
    for relative, content in sorted(sample_files().items()):
        path = Path(out_dir) / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m sit_vqa.samples.eval_samples",
        description="Write the GQA, xGQA, OK-VQA and XQuAD samples (official formats) into OUT/*_sample/.",
    )
    parser.add_argument("--out", type=Path, default=Path("data"), help="data folder (default: %(default)s)")
    written = write_samples(parser.parse_args(argv).out)
    print(f"wrote {len(written)} files ({sum(p.stat().st_size for p in written) / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
