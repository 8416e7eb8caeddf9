"""Action-triplet recognition: the Rendezvous (RDV) model, its checkpoints, data and training.

Imports torch; import this package only where a model is built (command bodies, loaders).

- `Rendezvous`, `RendezvousConfig` (`rendezvous.py`): the published architecture with the official
  state_dict names and shapes.
- `load_rendezvous(path, device=, dtype=)`, `save_rendezvous(model, folder)`, `infer_config(state)`
  (`checkpoint.py`): lapgen folders and official `rendezvous_*.pth` files, strict loading.
- `eval_transform(size)`, `train_transform(size)`, `RecognitionDataset`, `label_matrix` (`data.py`).
- `TrainRecognizerConfig`, `train_recognizer(config)`, `predict_scores(model, dataset)` (`train.py`);
  `MapEvalConfig`, `evaluate_map(config)` (`evaluate.py`).
"""

from lapgen.models.recognition.checkpoint import infer_config, load_rendezvous, read_state_dict, save_rendezvous
from lapgen.models.recognition.data import (
    RecognitionDataset,
    eval_transform,
    label_matrix,
    parse_size,
    preprocess_id,
    train_transform,
)
from lapgen.models.recognition.evaluate import MapEvalConfig, evaluate_map
from lapgen.models.recognition.rendezvous import Rendezvous, RendezvousConfig
from lapgen.models.recognition.train import TrainRecognizerConfig, predict_scores, train_recognizer

__all__ = [
    "Rendezvous", "RendezvousConfig", "load_rendezvous", "save_rendezvous", "infer_config", "read_state_dict",
    "RecognitionDataset", "eval_transform", "train_transform", "label_matrix", "parse_size", "preprocess_id",
    "TrainRecognizerConfig", "train_recognizer", "predict_scores", "MapEvalConfig", "evaluate_map",
]
