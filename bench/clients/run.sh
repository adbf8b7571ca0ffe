#!/usr/bin/env bash
# The outside-client check (issue #32 item 3): each framework's own loader on this package's exports.
#
#   bench/clients/run.sh                      # all, in this order: trl llamafactory swift lavis llava
#   bench/clients/run.sh trl swift            # some of them
#   bench/clients/run.sh --build lavis        # only build the venvs
#
# For each framework: builds its own venv under $VENVS/<name> (once; delete the folder to rebuild) with the CPU
# torch first, the framework pinned with --no-deps, then its requirements less the ones named in DROP below
# (torchvision / torchaudio would pull a CUDA torch over the CPU build); exports the bundled sample
# (data/sample) with `python -m sit_vqa.apps.prepare --format <fmt>`; and runs check_<name>.py, which loads the
# export with the framework's own code and a tiny LLaVA-1.5 built offline (tiny_llava.py), asserting the record
# count and that the supervised labels are exactly the targets. Each check prints one "RESULT {json}" line;
# they are gathered in $WORK/results.jsonl and a failing framework does not stop the others.
# Results of a run are recorded in docs/CLIENTS.md. Not run in CI: the installs download GBs.
#
# Environment: VENVS (default /work/venvs), WORK (default /tmp/sit_vqa_clients, emptied first), SIT_PYTHON (the
# python that has sit_vqa, default .venv/bin/python), SLOT (a command prefix for the CPU-heavy steps, default
# /work/shared/tools/slot where it exists).
set -uo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
HERE=$REPO/bench/clients
VENVS=${VENVS:-/work/venvs}
WORK=${WORK:-/tmp/sit_vqa_clients}
SIT_PYTHON=${SIT_PYTHON:-$REPO/.venv/bin/python}
[ -x "$SIT_PYTHON" ] || SIT_PYTHON=python3
SLOT=${SLOT-$([ -x /work/shared/tools/slot ] && echo /work/shared/tools/slot)}
SAMPLE=$REPO/data/sample
CPU_TORCH="torch==2.13.0"  # PyPI's CPU build on this machine

# name -> what to install, what to leave out of its requirements, the export, the stubs it needs
framework() {
    PYTHON=python3.11 TORCH=$CPU_TORCH PINS="" EXTRA="sentencepiece protobuf" DROP="" STUBS="" IMAGE_ROOT=""
    case $1 in
        trl) PACKAGE=trl==1.16.0 FORMAT=trl EXTRA="$EXTRA pillow" ;;
        llamafactory) PACKAGE=llamafactory==0.9.5 FORMAT=llamafactory DROP="torchvision torchaudio"
            STUBS=torchaudio IMAGE_ROOT=$SAMPLE/train2014 ;;
        swift) PACKAGE=ms-swift==4.6.0 FORMAT=swift ;;  # requires neither torchvision nor torchaudio
        # LAVIS's image processors are torchvision transforms, imported with `import lavis`: it gets the real
        # torchvision, and so PyPI's default (CUDA) torch build, which runs on the CPU; numpy<2 for its pinned
        # opencv-python-headless 4.5.5.64
        lavis) PACKAGE=salesforce-lavis==1.0.2 FORMAT=lavis IMAGE_ROOT=$SAMPLE/train2014
            TORCH="torch==2.14.1 torchvision==0.29.1" PINS="numpy<2" ;;
        # llava-torch pins torch 2.0.1 / torchvision 0.15.2; its data code imports neither torchvision nor timm
        # (timm pulls torchvision), and gradio is its demo server's; it needs pillow, which it does not list
        llava) PACKAGE=llava-torch==1.2.2.post1 FORMAT=llava IMAGE_ROOT=$SAMPLE/train2014 EXTRA="$EXTRA pillow"
            DROP="torch torchvision timm gradio gradio-client" PINS="numpy<2" ;;  # its scikit-learn 1.2.2: numpy 1
        *) echo "run.sh: unknown framework '$1'; choose from trl llamafactory swift lavis llava" >&2; exit 2 ;;
    esac
}

build() {  # $1 = name; installs nothing if the venv was built before
    local venv=$VENVS/$1 dist=${PACKAGE%%==*}
    [ -f "$venv/.built" ] && return 0
    rm -rf "$venv" && "$PYTHON" -m venv "$venv" || return 1
    printf '%s\n' $TORCH $PINS > "$venv/pins.txt"  # the requirements below may not move torch
    "$venv/bin/pip" install -q -c "$venv/pins.txt" $TORCH packaging $EXTRA || return 1
    "$venv/bin/pip" install -q --no-deps "$PACKAGE" || return 1
    "$venv/bin/python" "$HERE/requirements_of.py" "$dist" $DROP > "$venv/requirements.txt" || return 1
    "$venv/bin/pip" install -q -c "$venv/pins.txt" -r "$venv/requirements.txt" || return 1
    "$venv/bin/pip" freeze > "$venv/freeze.txt"
    touch "$venv/.built"
}

export_sample() {  # $1 = name -> $WORK/$1/export
    local extra=()
    [ -n "$IMAGE_ROOT" ] && extra=(--image-root "$IMAGE_ROOT")
    $SLOT env PYTHONPATH="$REPO" "$SIT_PYTHON" -m sit_vqa.apps.prepare \
        --questions "$SAMPLE/v2_OpenEnded_mscoco_train2014_questions.json" \
        --annotations "$SAMPLE/v2_mscoco_train2014_annotations.json" \
        --captions "$SAMPLE/captions_train2014.json" --image-dir "$SAMPLE/train2014" \
        --mode sit --format "$FORMAT" --out "$WORK/$1/export" "${extra[@]}"
}

check() {  # $1 = name; the check's own output goes to $WORK/$1/check.log
    local path=$HERE
    for stub in $STUBS; do path=$path:$HERE/stubs; done
    $SLOT env PYTHONPATH="$path" HF_HUB_OFFLINE=1 "$VENVS/$1/bin/python" "$HERE/check_$1.py" \
        "$WORK/$1/export" "$WORK/$1" $IMAGE_ROOT > "$WORK/$1/check.log" 2>&1
}

BUILD_ONLY=""
[ "${1:-}" = "--build" ] && { BUILD_ONLY=1; shift; }
names=${*:-trl llamafactory swift lavis llava}
for name in $names; do framework "$name"; done  # an unknown name stops here, before anything is removed
rm -rf "$WORK" && mkdir -p "$WORK"
status=0
for name in $names; do
    framework "$name"
    mkdir -p "$WORK/$name"
    echo "== $name ($PACKAGE)"
    if ! build "$name" > "$WORK/$name/build.log" 2>&1; then
        echo "{\"framework\": \"$name\", \"result\": \"not installed\", \"log\": \"$WORK/$name/build.log\"}" \
            | tee -a "$WORK/results.jsonl"; status=1; continue
    fi
    [ -n "$BUILD_ONLY" ] && continue
    if ! export_sample "$name" > "$WORK/$name/export.log" 2>&1; then
        echo "export failed: $WORK/$name/export.log" >&2; status=1; continue
    fi
    check "$name"; rc=$?
    result=$(grep '^RESULT ' "$WORK/$name/check.log" | tail -1 | cut -c8-)
    [ -n "$result" ] || result="{\"framework\": \"$name\", \"result\": \"error\", \"log\": \"$WORK/$name/check.log\"}"
    echo "$result" | tee -a "$WORK/results.jsonl"
    [ $rc = 0 ] || status=1
done
echo "results: $WORK/results.jsonl"
exit $status
