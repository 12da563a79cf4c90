"""Adam with one fused update op per weight, and Adam that updates only the rows a batch touches.

`FusedAdam`: Keras 3's Adam builds about 20 small ops per weight and step (two powers, the moment
updates, the square root, the division, ...). A model with many small weights (MIC adds four
projection heads, 16 weights) then spends more time scheduling Adam's ops than computing them.
`FusedAdam` applies TensorFlow's `ResourceApplyAdam` kernel instead, one op per weight with the
same formula as `keras.optimizers.Adam` (`m += (g - m)(1 - b1)`, `v += (g^2 - v)(1 - b2)`,
`w -= lr sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + eps)`); the kernel exists on CPU and GPU and
under XLA.

`LazyAdam` (the embedding rows a batch touches only):

Keras 3's Adam turns a sparse gradient (`tf.IndexedSlices`, what `tf.gather` on a table gives)
into a dense one and updates the whole table and both moment tables every step: on a 300k-item
catalogue that is most of the step's time. `LazyAdam` applies Adam to the touched rows only, as
TensorFlow Addons' `LazyAdam` did: rows absent from a batch keep their value *and* their moments
(their moments are not decayed for that step). Dense gradients take `FusedAdam`'s path,
so every non-embedding weight is updated as with `keras.optimizers.Adam`.
"""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="mic")
class FusedAdam(keras.optimizers.Adam):
    """`keras.optimizers.Adam` (same state, same updates) with one `ResourceApplyAdam` per weight.

    A sparse gradient is made dense first, as Keras' Adam does; AMSGrad takes Keras' path.
    """

    def update_step(self, gradient, variable, learning_rate):
        if self.amsgrad:
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        index = self._get_variable_index(variable)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=self._momentums[index].handle,
            v=self._velocities[index].handle,
            beta1_power=tf.pow(tf.cast(self.beta_1, dtype), step),
            beta2_power=tf.pow(tf.cast(self.beta_2, dtype), step),
            lr=tf.cast(learning_rate, dtype), beta1=tf.cast(self.beta_1, dtype),
            beta2=tf.cast(self.beta_2, dtype), epsilon=tf.cast(self.epsilon, dtype),
            grad=tf.cast(tf.convert_to_tensor(gradient), dtype))


@keras.saving.register_keras_serializable(package="mic")
class LazyAdam(FusedAdam):
    """`FusedAdam` with row-wise updates for `tf.IndexedSlices` gradients."""

    def update_step(self, gradient, variable, learning_rate):
        if not isinstance(gradient, tf.IndexedSlices) or self.amsgrad:
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        rows, position = tf.unique(gradient.indices)
        grad = tf.math.unsorted_segment_sum(tf.cast(gradient.values, dtype), position,
                                            tf.shape(rows)[0])  # repeated rows add up
        step = tf.cast(self.iterations + 1, dtype)
        lr = tf.cast(learning_rate, dtype)
        alpha = lr * tf.sqrt(1 - tf.pow(tf.cast(self.beta_2, dtype), step)) / (
            1 - tf.pow(tf.cast(self.beta_1, dtype), step))
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        m_rows = tf.gather(m.value, rows) * self.beta_1 + grad * (1 - self.beta_1)
        v_rows = tf.gather(v.value, rows) * self.beta_2 + tf.square(grad) * (1 - self.beta_2)
        # The TF backend's assign helpers turn IndexedSlices into scatter ops on the rows.
        self.assign(m, tf.IndexedSlices(m_rows, rows))
        self.assign(v, tf.IndexedSlices(v_rows, rows))
        step_rows = alpha * m_rows / (tf.sqrt(v_rows) + self.epsilon)
        self.assign_sub(variable, tf.IndexedSlices(step_rows, rows))
