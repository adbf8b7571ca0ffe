"""peft's get_peft_model without the warning it makes transformers give.

peft (0.21) asks the model for `is_gradient_checkpointing`, which transformers 5 deprecates with a FutureWarning
on every LoRA model built -- in training, in evaluation, in the demo. Nothing a user does changes it; the model
answers the same through `is_activation_checkpointing`. Every LoRA model is made here, with that one warning
silenced (any other warning still shows).
"""

from __future__ import annotations

import warnings


def get_peft_model(model, config):
    from peft import get_peft_model as make  # peft only where LoRA is used

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        return make(model, config)
