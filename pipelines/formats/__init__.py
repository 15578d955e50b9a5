"""File formats, free of pipeline knowledge: whole-file reads and atomic writes on any Beam
filesystem (`files`), TFRecord framing (`tfrecord`), and tf.train.Example bytes written column by
column (`example_encoder`) and parsed back without TensorFlow (`example_decoder`)."""
