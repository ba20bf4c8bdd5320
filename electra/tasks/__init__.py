"""Fine-tuning: the Task protocol and its registry, the shared fine-tuning recipe
(layer-wise learning-rate decay, warm-up, saving), the task kinds (GLUE classification
and regression, extractive QA, NER) and the ``finetune`` stage. It may import
``electra.core``, ``electra.data`` and ``electra.pretraining``.
"""
