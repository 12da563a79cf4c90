"""mic-tf: the reference TensorFlow 2 / Keras 3 implementation of MIC (CIKM'22).

Folders follow the paper:
  mic_tf/data/        datasets, the ComiRec protocol (spec 2.2) and tf.data samplers (spec 2.3)
  mic_tf/evaluation/  full-catalogue retrieval with Faiss and the metrics of spec 5
  mic_tf/models/      UserTower / ItemTower encoders and the MIC plugin (paper 2.3-2.7)
  mic_tf/training/    the custom train_step, checkpoints and TensorBoard logging
  mic_tf/distributed/ multi-worker training over the same train step (TF_CONFIG, launcher)
"""

__version__ = "0.1.0"
