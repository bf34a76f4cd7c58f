"""The run-folder workflow between the library and the CLI: train, compress, evaluate, experiments.

Every function here writes or reads self-describing run folders (docs/RUN_FOLDERS.md);
the ``lorita`` command only parses flags and calls them.

Example:
    >>> from lorita.runs import RunConfig, ModelSpec, DataSpec, ComposeSpec
    >>> from lorita.train import TrainConfig
    >>> config = RunConfig(ModelSpec("fcn", {"width": 16}, {"num_classes": 10, "in_channels": 1, "image_size": 8}),
    ...                    DataSpec("digits"), ComposeSpec(depth=3), TrainConfig(epochs=1, device="cpu"))
    >>> import tempfile, pathlib
    >>> run = train_run(pathlib.Path(tempfile.mkdtemp()) / "fcn-d3", config, config.dataset.load(), progress=False)
    >>> sorted(p.name for p in run.folder.iterdir())
    ['checkpoint.pt', 'config.json', 'metrics.csv', 'model.lorita', 'results.json', 'spectrum.json']
"""

from lorita.runs.compress import compress_model, compress_run
from lorita.runs.config import CompressConfig, ComposeSpec, DataSpec, ModelSpec, RunConfig, data_of, train_config_of
from lorita.runs.data import load_data
from lorita.runs.evaluate import evaluate_run
from lorita.runs.experiment import machine, plan_experiment, run_experiment
from lorita.runs.experiment_spec import ExperimentSpec, load_spec
from lorita.runs.folder import is_marked, read_json, write_json
from lorita.runs.lm import compress_lm_run, evaluate_lm_run, load_lm_run
from lorita.runs.output import RunOutput
from lorita.runs.train import TrainedRun, build_model, train_run

__all__ = [
    "ComposeSpec", "CompressConfig", "DataSpec", "ExperimentSpec", "ModelSpec", "RunConfig", "RunOutput", "TrainedRun",
    "build_model", "compress_lm_run", "compress_model", "compress_run", "data_of", "evaluate_lm_run",
    "evaluate_run", "is_marked", "load_data", "load_lm_run", "load_spec", "machine",
    "plan_experiment", "read_json", "run_experiment", "train_config_of", "train_run", "write_json",
]
