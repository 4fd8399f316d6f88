"""ONNX node conformance cases dcopt is expected to fail, with the reason each fails.

Regenerate with ``python -m dcopt.tools.conformance --write-expected PATH`` after fixing ops;
the conformance test fails when a listed case starts passing, so this list stays honest.
"""

EXPECTED_FAILURES = {
    'test_adagrad': 'ai.onnx.preview.training domain op Adagrad is not implemented',
    'test_adagrad_multiple': 'ai.onnx.preview.training domain op Adagrad is not implemented',
    'test_adam': 'ai.onnx.preview.training domain op Adam is not implemented',
    'test_adam_multiple': 'ai.onnx.preview.training domain op Adam is not implemented',
    'test_ai_onnx_ml_array_feature_extractor': 'ai.onnx.ml domain op ArrayFeatureExtractor is not implemented',
    'test_ai_onnx_ml_binarizer': 'ai.onnx.ml domain op Binarizer is not implemented',
    'test_ai_onnx_ml_label_encoder_string_int': 'ai.onnx.ml domain op LabelEncoder is not implemented',
    'test_ai_onnx_ml_label_encoder_string_int_no_default': 'ai.onnx.ml domain op LabelEncoder is not implemented',
    'test_ai_onnx_ml_label_encoder_tensor_mapping': 'ai.onnx.ml domain op LabelEncoder is not implemented',
    'test_ai_onnx_ml_label_encoder_tensor_value_only_mapping': 'ai.onnx.ml domain op LabelEncoder is not implemented',
    'test_ai_onnx_ml_tree_ensemble_set_membership': 'ai.onnx.ml domain op TreeEnsemble is not implemented',
    'test_ai_onnx_ml_tree_ensemble_single_tree': 'ai.onnx.ml domain op TreeEnsemble is not implemented',
    'test_image_decoder_decode_bmp_rgb': 'ImageDecoder (image file decoding) is not implemented',
    'test_image_decoder_decode_jpeg2k_rgb': 'ImageDecoder (image file decoding) is not implemented',
    'test_image_decoder_decode_jpeg_bgr': 'ImageDecoder (image file decoding) is not implemented',
    'test_image_decoder_decode_jpeg_grayscale': 'ImageDecoder (image file decoding) is not implemented',
    'test_image_decoder_decode_jpeg_rgb': 'ImageDecoder (image file decoding) is not implemented',
    'test_image_decoder_decode_png_rgb': 'ImageDecoder (image file decoding) is not implemented',
    'test_image_decoder_decode_pnm_rgb': 'ImageDecoder (image file decoding) is not implemented',
    'test_image_decoder_decode_tiff_rgb': 'ImageDecoder (image file decoding) is not implemented',
    'test_image_decoder_decode_webp_rgb': 'ImageDecoder (image file decoding) is not implemented',
    'test_momentum': 'ai.onnx.preview.training domain op Momentum is not implemented',
    'test_momentum_multiple': 'ai.onnx.preview.training domain op Momentum is not implemented',
    'test_nesterov_momentum': 'ai.onnx.preview.training domain op Momentum is not implemented',
}
