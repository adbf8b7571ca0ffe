"""Templates: default strings, validation, rendering; parse_sit_output: render -> parse round trips."""

import itertools

import pytest

from sit_vqa.data.prompts import ParsedOutput, Templates, parse_sit_output

CAPTIONS = [
    "A plate of food.",
    "Dinner: rice, broccoli and a fork.",  # colon
    "Time: 10:30, place: the station",  # several colons
    "A sign that reads Answer: none",  # the answer marker inside the caption
    "The answer is written on the whiteboard",  # the word without a colon
    "A description: of a cat, described",  # the description marker inside the caption
    "Two lines\nof caption",  # newline
    "  Padded caption with spaces  ",
    "Ein Hund läuft über die Wiese — schön!",
    "",
]
ANSWERS = ["yes", "no", "2", "red and white", "10:30", "answer", "tennis racket", ""]


def test_defaults_are_the_papers_strings():
    templates = Templates()
    assert templates.render("baseline", question="Is it red?", caption="A red bus.", answer="yes") == (
        "Answer the input question based on the image.\nQuestion: Is it red?", "yes")
    assert templates.render("sit", question="Is it red?", caption="A red bus.", answer="yes") == (
        "First describe the image, then answer the input question based on the image.\nQuestion: Is it red?",
        "Description: A red bus.\nAnswer: yes")
    assert templates.render("describe", caption="A red bus.") == ("Describe the image.", "A red bus.")


def test_baseline_target_never_contains_the_caption():
    _, target = Templates().render("baseline", question="q", caption="A red bus.", answer="yes")
    assert target == "yes" and "bus" not in target and "Answer:" not in target


def test_render_keeps_punctuation_and_newlines_in_fields():
    _, target = Templates().render("sit", caption="Dinner: rice,\nbroccoli.", answer="10:30")
    assert target == "Description: Dinner: rice,\nbroccoli.\nAnswer: 10:30"


def test_custom_templates_render_with_literal_braces_and_format_specs():
    templates = Templates(baseline_instruction="{{json}} Q={question}", baseline_target="{answer!r:>8}")
    assert templates.render("baseline", question="why?", answer="ok") == ("{json} Q=why?", "    'ok'")


def test_render_rejects_an_unknown_kind():
    with pytest.raises(ValueError, match="unknown record kind 'mixed'"):
        Templates().render("mixed", question="q")


@pytest.mark.parametrize(("field", "template", "error", "message"), [
    ("sit_target", "Description: {description}", ValueError, "unknown field.*description"),
    ("baseline_instruction", "{question} {0}", ValueError, "unknown field"),
    ("baseline_instruction", "Question: {question", ValueError, "not a valid format string"),
    ("describe_target", "}{caption}", ValueError, "not a valid format string"),
    ("sit_instruction", None, TypeError, "must be a string"),
    ("baseline_target", "{answer.upper}", ValueError, "unknown field"),
])
def test_invalid_templates_are_rejected_naming_the_field(field, template, error, message):
    with pytest.raises(error, match=message) as raised:
        Templates(**{field: template})
    assert field in str(raised.value)


@pytest.mark.parametrize(("caption", "answer"), list(itertools.product(CAPTIONS, ANSWERS)))
def test_render_then_parse_round_trips(caption, answer):
    _, target = Templates().render("sit", question="q?", caption=caption, answer=answer)
    parsed = parse_sit_output(target)
    assert parsed == ParsedOutput(description=caption.strip(), answer=answer, has_answer_marker=True)


@pytest.mark.parametrize(("caption", "answer"), list(itertools.product(CAPTIONS[:7], ["yes", "red and white"])))
@pytest.mark.parametrize("change", [str.upper, str.lower])
def test_parse_is_case_insensitive_on_markers(caption, answer, change):
    _, target = Templates().render("sit", caption=caption, answer=answer)
    parsed = parse_sit_output(change(target))
    assert (parsed.description, parsed.answer) == (change(caption).strip(), change(answer))


@pytest.mark.parametrize("answer", ["yes", "2", "red and white", "10:30"])
@pytest.mark.parametrize("trailing", ["\nQuestion: what else?", "\n\nAnswer the input question.", "\n###", "\n"])
def test_parse_drops_trailing_lines(answer, trailing):
    parsed = parse_sit_output(f"Description: A red bus.\nAnswer: {answer}{trailing}")
    assert parsed.answer == answer and parsed.description == "A red bus."


def test_parse_tolerates_missing_markers_and_surrounding_text():
    assert parse_sit_output("yes") == ParsedOutput(None, "yes", False)  # a baseline-style output
    assert parse_sit_output("  2 \n") == ParsedOutput(None, "2", False)
    assert parse_sit_output("Description: A red bus.\nyes") == ParsedOutput("A red bus.", "yes", False)
    assert parse_sit_output("A red bus.\nAnswer: yes") == ParsedOutput(None, "yes", True)


def test_parse_without_markers_keeps_the_first_line_not_trailing_text():
    assert parse_sit_output("red\nQuestion: what color is the bus?") == ParsedOutput(None, "red", False)
    assert parse_sit_output("Description: A red bus.\nyes\nQuestion: is it red?") == ParsedOutput("A red bus.", "yes", False)
    assert parse_sit_output("Sure! Description: A red bus. Answer: yes") == ParsedOutput("A red bus.", "yes", True)
    assert parse_sit_output("description :A red bus.\nanswer :yes") == ParsedOutput("A red bus.", "yes", True)
    assert parse_sit_output("Description: A red bus.") == ParsedOutput("A red bus.", "", False)
    assert parse_sit_output("Description: A red bus.\nAnswer:") == ParsedOutput("A red bus.", "", True)
    assert parse_sit_output("") == ParsedOutput(None, "", False)


def test_parse_answer_before_description():
    assert parse_sit_output("Answer: yes\nDescription: A red bus.") == ParsedOutput("A red bus.", "yes", True)


def test_parse_empty_description_right_before_the_answer_marker():
    assert parse_sit_output("Description:Answer: yes") == ParsedOutput("", "yes", True)
    _, target = Templates().render("sit", caption="", answer="yes")
    assert parse_sit_output(target) == ParsedOutput("", "yes", True)


def test_parse_takes_the_last_answer_marker():
    """An "Answer:" inside the description does not cut it short."""
    text = "Description: A sign that reads Answer: none\nAnswer: stop"
    assert parse_sit_output(text) == ParsedOutput("A sign that reads Answer: none", "stop", True)


def test_parse_keeps_the_first_answer_when_the_model_goes_on_with_another_question():
    text = "Description: a red bus.\nAnswer: yes\n\nQuestion: How many buses?\nAnswer: 2"
    assert parse_sit_output(text) == ParsedOutput("a red bus.", "yes", True)
    assert parse_sit_output("Description: a red bus. Answer: yes Answer: no").answer == "no"  # one line: the last


def test_templates_the_parser_cannot_split_are_refused():
    from sit_vqa.data.prompts import check_parsable

    check_parsable(Templates())
    check_parsable(Templates(sit_target="Description: {caption}\nAnswer: {answer}.", baseline_target="Answer: {answer}"))
    with pytest.raises(ValueError, match="sit_target=.*cannot be split back.*Put the answer on a line starting 'Answer: {answer}'"):
        check_parsable(Templates(sit_target="Caption: {caption}\nSo the answer is {answer}"))
    with pytest.raises(ValueError, match="baseline_target=.*cannot be split back"):
        check_parsable(Templates(baseline_target="The answer is probably {answer}, I think.\nYes."))
