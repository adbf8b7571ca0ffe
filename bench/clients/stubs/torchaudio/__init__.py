"""Stand-in for torchaudio in the client check's venvs (bench/clients/run.sh puts this folder on PYTHONPATH only
for the frameworks that need it, and says which in docs/CLIENTS.md).

LLaMA-Factory 0.9.5 imports torchaudio at the top of llamafactory/data/mm_plugin.py and calls it only to load
audio; the real wheel would pull a CUDA torch over the CPU build. Having no dist-info, this stub is reported as
absent by importlib.metadata (so transformers does not take torchaudio as available). Any use raises.
"""


def __getattr__(name):
    # AttributeError, so that hasattr() probes read the stub as lacking the attribute
    raise AttributeError(f"torchaudio is a stub in this venv (bench/clients/stubs): torchaudio.{name} is unavailable")
