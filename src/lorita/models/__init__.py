"""The model zoo: the paper's architectures and a character-level GPT, built only from standard torch layers.

Example:
    >>> from lorita.models import create_model, list_models
    >>> list_models()
    ['fcn', 'gpt', 'resnet20', 'resnet56', 'vgg16', 'vgg_small', 'vit']
    >>> net = create_model("resnet20", num_classes=10, in_channels=3, image_size=32)
"""

from lorita.models.registry import create_model, list_models, model_inputs, paper_exclude

# Importing the family files registers their builders.
from lorita.models import fcn, gpt, resnet, vgg, vit  # noqa: F401,E402

__all__ = ["create_model", "list_models", "model_inputs", "paper_exclude"]
