from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DataType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DATA_TYPE_UNSPECIFIED: _ClassVar[DataType]
    DATA_TYPE_FP32: _ClassVar[DataType]
    DATA_TYPE_FP64: _ClassVar[DataType]
    DATA_TYPE_FP16: _ClassVar[DataType]
    DATA_TYPE_INT32: _ClassVar[DataType]
    DATA_TYPE_INT64: _ClassVar[DataType]
    DATA_TYPE_UINT8: _ClassVar[DataType]
    DATA_TYPE_BOOL: _ClassVar[DataType]

class BaseMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BASE_METHOD_UNSPECIFIED: _ClassVar[BaseMethod]
    BASE_METHOD_GRADIENT: _ClassVar[BaseMethod]
    BASE_METHOD_GRADIENT_X_INPUT: _ClassVar[BaseMethod]
    BASE_METHOD_INTEGRATED_GRADIENTS: _ClassVar[BaseMethod]

class SmoothingMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SMOOTHING_MODE_UNSPECIFIED: _ClassVar[SmoothingMode]
    SMOOTHING_MODE_NONE: _ClassVar[SmoothingMode]
    SMOOTHING_MODE_INPUT: _ClassVar[SmoothingMode]
    SMOOTHING_MODE_PARAMETER: _ClassVar[SmoothingMode]
    SMOOTHING_MODE_FUSION: _ClassVar[SmoothingMode]

class ScalePolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCALE_POLICY_UNSPECIFIED: _ClassVar[ScalePolicy]
    SCALE_POLICY_FIXED: _ClassVar[ScalePolicy]
    SCALE_POLICY_ADAPTIVE: _ClassVar[ScalePolicy]
    SCALE_POLICY_TRUNCATED: _ClassVar[ScalePolicy]

class AdaptiveRule(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ADAPTIVE_RULE_UNSPECIFIED: _ClassVar[AdaptiveRule]
    ADAPTIVE_RULE_ONE_SIDED: _ClassVar[AdaptiveRule]
    ADAPTIVE_RULE_TWO_SIDED: _ClassVar[AdaptiveRule]

class IntegrationRule(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INTEGRATION_RULE_UNSPECIFIED: _ClassVar[IntegrationRule]
    INTEGRATION_RULE_RIEMANN_LEFT: _ClassVar[IntegrationRule]
    INTEGRATION_RULE_RIEMANN_RIGHT: _ClassVar[IntegrationRule]
    INTEGRATION_RULE_RIEMANN_MIDDLE: _ClassVar[IntegrationRule]
    INTEGRATION_RULE_RIEMANN_TRAPEZOID: _ClassVar[IntegrationRule]
    INTEGRATION_RULE_GAUSS_LEGENDRE: _ClassVar[IntegrationRule]

class Baseline(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BASELINE_UNSPECIFIED: _ClassVar[Baseline]
    BASELINE_ZERO: _ClassVar[Baseline]
    BASELINE_BLACK: _ClassVar[Baseline]
    BASELINE_WHITE: _ClassVar[Baseline]

class IGSmoothing(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IG_SMOOTHING_UNSPECIFIED: _ClassVar[IGSmoothing]
    IG_SMOOTHING_INNER: _ClassVar[IGSmoothing]
    IG_SMOOTHING_OUTER: _ClassVar[IGSmoothing]

class Transform(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRANSFORM_UNSPECIFIED: _ClassVar[Transform]
    TRANSFORM_NONE: _ClassVar[Transform]
    TRANSFORM_ABS: _ClassVar[Transform]
    TRANSFORM_SMOOTHGRAD_SQ: _ClassVar[Transform]
    TRANSFORM_VARGRAD: _ClassVar[Transform]

class ChannelReduction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHANNEL_REDUCTION_UNSPECIFIED: _ClassVar[ChannelReduction]
    CHANNEL_REDUCTION_NONE: _ClassVar[ChannelReduction]
    CHANNEL_REDUCTION_SUM: _ClassVar[ChannelReduction]
    CHANNEL_REDUCTION_MEAN: _ClassVar[ChannelReduction]
    CHANNEL_REDUCTION_MAX_ABS: _ClassVar[ChannelReduction]

class Sampler(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SAMPLER_UNSPECIFIED: _ClassVar[Sampler]
    SAMPLER_IID: _ClassVar[Sampler]
    SAMPLER_ANTITHETIC: _ClassVar[Sampler]
    SAMPLER_LATIN_HYPERCUBE: _ClassVar[Sampler]
    SAMPLER_SOBOL: _ClassVar[Sampler]

class RegionReduction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REGION_REDUCTION_UNSPECIFIED: _ClassVar[RegionReduction]
    REGION_REDUCTION_SUM: _ClassVar[RegionReduction]
    REGION_REDUCTION_MEAN: _ClassVar[RegionReduction]

class DetectionLayout(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DETECTION_LAYOUT_UNSPECIFIED: _ClassVar[DetectionLayout]
    DETECTION_LAYOUT_CHANNELS_FIRST: _ClassVar[DetectionLayout]
    DETECTION_LAYOUT_ANCHORS_FIRST: _ClassVar[DetectionLayout]
DATA_TYPE_UNSPECIFIED: DataType
DATA_TYPE_FP32: DataType
DATA_TYPE_FP64: DataType
DATA_TYPE_FP16: DataType
DATA_TYPE_INT32: DataType
DATA_TYPE_INT64: DataType
DATA_TYPE_UINT8: DataType
DATA_TYPE_BOOL: DataType
BASE_METHOD_UNSPECIFIED: BaseMethod
BASE_METHOD_GRADIENT: BaseMethod
BASE_METHOD_GRADIENT_X_INPUT: BaseMethod
BASE_METHOD_INTEGRATED_GRADIENTS: BaseMethod
SMOOTHING_MODE_UNSPECIFIED: SmoothingMode
SMOOTHING_MODE_NONE: SmoothingMode
SMOOTHING_MODE_INPUT: SmoothingMode
SMOOTHING_MODE_PARAMETER: SmoothingMode
SMOOTHING_MODE_FUSION: SmoothingMode
SCALE_POLICY_UNSPECIFIED: ScalePolicy
SCALE_POLICY_FIXED: ScalePolicy
SCALE_POLICY_ADAPTIVE: ScalePolicy
SCALE_POLICY_TRUNCATED: ScalePolicy
ADAPTIVE_RULE_UNSPECIFIED: AdaptiveRule
ADAPTIVE_RULE_ONE_SIDED: AdaptiveRule
ADAPTIVE_RULE_TWO_SIDED: AdaptiveRule
INTEGRATION_RULE_UNSPECIFIED: IntegrationRule
INTEGRATION_RULE_RIEMANN_LEFT: IntegrationRule
INTEGRATION_RULE_RIEMANN_RIGHT: IntegrationRule
INTEGRATION_RULE_RIEMANN_MIDDLE: IntegrationRule
INTEGRATION_RULE_RIEMANN_TRAPEZOID: IntegrationRule
INTEGRATION_RULE_GAUSS_LEGENDRE: IntegrationRule
BASELINE_UNSPECIFIED: Baseline
BASELINE_ZERO: Baseline
BASELINE_BLACK: Baseline
BASELINE_WHITE: Baseline
IG_SMOOTHING_UNSPECIFIED: IGSmoothing
IG_SMOOTHING_INNER: IGSmoothing
IG_SMOOTHING_OUTER: IGSmoothing
TRANSFORM_UNSPECIFIED: Transform
TRANSFORM_NONE: Transform
TRANSFORM_ABS: Transform
TRANSFORM_SMOOTHGRAD_SQ: Transform
TRANSFORM_VARGRAD: Transform
CHANNEL_REDUCTION_UNSPECIFIED: ChannelReduction
CHANNEL_REDUCTION_NONE: ChannelReduction
CHANNEL_REDUCTION_SUM: ChannelReduction
CHANNEL_REDUCTION_MEAN: ChannelReduction
CHANNEL_REDUCTION_MAX_ABS: ChannelReduction
SAMPLER_UNSPECIFIED: Sampler
SAMPLER_IID: Sampler
SAMPLER_ANTITHETIC: Sampler
SAMPLER_LATIN_HYPERCUBE: Sampler
SAMPLER_SOBOL: Sampler
REGION_REDUCTION_UNSPECIFIED: RegionReduction
REGION_REDUCTION_SUM: RegionReduction
REGION_REDUCTION_MEAN: RegionReduction
DETECTION_LAYOUT_UNSPECIFIED: DetectionLayout
DETECTION_LAYOUT_CHANNELS_FIRST: DetectionLayout
DETECTION_LAYOUT_ANCHORS_FIRST: DetectionLayout

class Tensor(_message.Message):
    __slots__ = ("datatype", "shape", "raw_contents")
    DATATYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    RAW_CONTENTS_FIELD_NUMBER: _ClassVar[int]
    datatype: DataType
    shape: _containers.RepeatedScalarFieldContainer[int]
    raw_contents: bytes
    def __init__(self, datatype: _Optional[_Union[DataType, str]] = ..., shape: _Optional[_Iterable[int]] = ..., raw_contents: _Optional[bytes] = ...) -> None: ...

class Method(_message.Message):
    __slots__ = ("base", "mode", "kernel", "scale", "alpha", "sigma", "confidence", "adaptive_rule", "samples", "weight_draws", "weight_sigma", "weight_exclude", "ig_steps", "ig_rule", "ig_baseline", "ig_baseline_tensor", "ig_smoothing", "transform", "channel_axis", "channel_reduction", "target_relative_error", "max_samples", "sampler", "replicates")
    BASE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    KERNEL_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    SIGMA_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    ADAPTIVE_RULE_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DRAWS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_SIGMA_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_EXCLUDE_FIELD_NUMBER: _ClassVar[int]
    IG_STEPS_FIELD_NUMBER: _ClassVar[int]
    IG_RULE_FIELD_NUMBER: _ClassVar[int]
    IG_BASELINE_FIELD_NUMBER: _ClassVar[int]
    IG_BASELINE_TENSOR_FIELD_NUMBER: _ClassVar[int]
    IG_SMOOTHING_FIELD_NUMBER: _ClassVar[int]
    TRANSFORM_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_AXIS_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_REDUCTION_FIELD_NUMBER: _ClassVar[int]
    TARGET_RELATIVE_ERROR_FIELD_NUMBER: _ClassVar[int]
    MAX_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SAMPLER_FIELD_NUMBER: _ClassVar[int]
    REPLICATES_FIELD_NUMBER: _ClassVar[int]
    base: BaseMethod
    mode: SmoothingMode
    kernel: str
    scale: ScalePolicy
    alpha: float
    sigma: Tensor
    confidence: float
    adaptive_rule: AdaptiveRule
    samples: int
    weight_draws: int
    weight_sigma: float
    weight_exclude: _containers.RepeatedScalarFieldContainer[str]
    ig_steps: int
    ig_rule: IntegrationRule
    ig_baseline: Baseline
    ig_baseline_tensor: Tensor
    ig_smoothing: IGSmoothing
    transform: Transform
    channel_axis: int
    channel_reduction: ChannelReduction
    target_relative_error: float
    max_samples: int
    sampler: Sampler
    replicates: int
    def __init__(self, base: _Optional[_Union[BaseMethod, str]] = ..., mode: _Optional[_Union[SmoothingMode, str]] = ..., kernel: _Optional[str] = ..., scale: _Optional[_Union[ScalePolicy, str]] = ..., alpha: _Optional[float] = ..., sigma: _Optional[_Union[Tensor, _Mapping]] = ..., confidence: _Optional[float] = ..., adaptive_rule: _Optional[_Union[AdaptiveRule, str]] = ..., samples: _Optional[int] = ..., weight_draws: _Optional[int] = ..., weight_sigma: _Optional[float] = ..., weight_exclude: _Optional[_Iterable[str]] = ..., ig_steps: _Optional[int] = ..., ig_rule: _Optional[_Union[IntegrationRule, str]] = ..., ig_baseline: _Optional[_Union[Baseline, str]] = ..., ig_baseline_tensor: _Optional[_Union[Tensor, _Mapping]] = ..., ig_smoothing: _Optional[_Union[IGSmoothing, str]] = ..., transform: _Optional[_Union[Transform, str]] = ..., channel_axis: _Optional[int] = ..., channel_reduction: _Optional[_Union[ChannelReduction, str]] = ..., target_relative_error: _Optional[float] = ..., max_samples: _Optional[int] = ..., sampler: _Optional[_Union[Sampler, str]] = ..., replicates: _Optional[int] = ...) -> None: ...

class PredictedClass(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Target(_message.Message):
    __slots__ = ("output", "class_index", "predicted", "top_k", "cotangent", "region", "detection")
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    CLASS_INDEX_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    COTANGENT_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    DETECTION_FIELD_NUMBER: _ClassVar[int]
    output: str
    class_index: int
    predicted: PredictedClass
    top_k: int
    cotangent: Tensor
    region: Region
    detection: Detection
    def __init__(self, output: _Optional[str] = ..., class_index: _Optional[int] = ..., predicted: _Optional[_Union[PredictedClass, _Mapping]] = ..., top_k: _Optional[int] = ..., cotangent: _Optional[_Union[Tensor, _Mapping]] = ..., region: _Optional[_Union[Region, _Mapping]] = ..., detection: _Optional[_Union[Detection, _Mapping]] = ...) -> None: ...

class AxisSlice(_message.Message):
    __slots__ = ("start", "stop", "step")
    START_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    start: int
    stop: int
    step: int
    def __init__(self, start: _Optional[int] = ..., stop: _Optional[int] = ..., step: _Optional[int] = ...) -> None: ...

class AxisRange(_message.Message):
    __slots__ = ("index", "slice")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    SLICE_FIELD_NUMBER: _ClassVar[int]
    index: int
    slice: AxisSlice
    def __init__(self, index: _Optional[int] = ..., slice: _Optional[_Union[AxisSlice, _Mapping]] = ...) -> None: ...

class Region(_message.Message):
    __slots__ = ("axes", "mask", "reduction")
    AXES_FIELD_NUMBER: _ClassVar[int]
    MASK_FIELD_NUMBER: _ClassVar[int]
    REDUCTION_FIELD_NUMBER: _ClassVar[int]
    axes: _containers.RepeatedCompositeFieldContainer[AxisRange]
    mask: Tensor
    reduction: RegionReduction
    def __init__(self, axes: _Optional[_Iterable[_Union[AxisRange, _Mapping]]] = ..., mask: _Optional[_Union[Tensor, _Mapping]] = ..., reduction: _Optional[_Union[RegionReduction, str]] = ...) -> None: ...

class Detection(_message.Message):
    __slots__ = ("index", "class_index", "layout", "box_values")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    CLASS_INDEX_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    BOX_VALUES_FIELD_NUMBER: _ClassVar[int]
    index: int
    class_index: int
    layout: DetectionLayout
    box_values: int
    def __init__(self, index: _Optional[int] = ..., class_index: _Optional[int] = ..., layout: _Optional[_Union[DetectionLayout, str]] = ..., box_values: _Optional[int] = ...) -> None: ...

class ExplainRequest(_message.Message):
    __slots__ = ("model_name", "inputs", "target", "method", "seed", "lower", "upper", "extra_inputs", "explained_input")
    class ExtraInputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    LOWER_FIELD_NUMBER: _ClassVar[int]
    UPPER_FIELD_NUMBER: _ClassVar[int]
    EXTRA_INPUTS_FIELD_NUMBER: _ClassVar[int]
    EXPLAINED_INPUT_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    inputs: Tensor
    target: Target
    method: Method
    seed: int
    lower: Tensor
    upper: Tensor
    extra_inputs: _containers.MessageMap[str, Tensor]
    explained_input: str
    def __init__(self, model_name: _Optional[str] = ..., inputs: _Optional[_Union[Tensor, _Mapping]] = ..., target: _Optional[_Union[Target, _Mapping]] = ..., method: _Optional[_Union[Method, _Mapping]] = ..., seed: _Optional[int] = ..., lower: _Optional[_Union[Tensor, _Mapping]] = ..., upper: _Optional[_Union[Tensor, _Mapping]] = ..., extra_inputs: _Optional[_Mapping[str, Tensor]] = ..., explained_input: _Optional[str] = ...) -> None: ...

class InstanceExplanation(_message.Message):
    __slots__ = ("instance_index", "rank", "attribution", "standard_error", "outputs", "cotangent", "target_index", "output", "samples", "gradient_evaluations", "seed", "inherent_noise", "relative_error", "queued_ms", "computing_ms", "execution_provider", "method_description", "zero_scale_fraction", "standard_error_note")
    INSTANCE_INDEX_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    STANDARD_ERROR_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    COTANGENT_FIELD_NUMBER: _ClassVar[int]
    TARGET_INDEX_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_EVALUATIONS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    INHERENT_NOISE_FIELD_NUMBER: _ClassVar[int]
    RELATIVE_ERROR_FIELD_NUMBER: _ClassVar[int]
    QUEUED_MS_FIELD_NUMBER: _ClassVar[int]
    COMPUTING_MS_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_PROVIDER_FIELD_NUMBER: _ClassVar[int]
    METHOD_DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    ZERO_SCALE_FRACTION_FIELD_NUMBER: _ClassVar[int]
    STANDARD_ERROR_NOTE_FIELD_NUMBER: _ClassVar[int]
    instance_index: int
    rank: int
    attribution: Tensor
    standard_error: Tensor
    outputs: Tensor
    cotangent: Tensor
    target_index: int
    output: str
    samples: int
    gradient_evaluations: int
    seed: int
    inherent_noise: float
    relative_error: float
    queued_ms: float
    computing_ms: float
    execution_provider: str
    method_description: str
    zero_scale_fraction: float
    standard_error_note: str
    def __init__(self, instance_index: _Optional[int] = ..., rank: _Optional[int] = ..., attribution: _Optional[_Union[Tensor, _Mapping]] = ..., standard_error: _Optional[_Union[Tensor, _Mapping]] = ..., outputs: _Optional[_Union[Tensor, _Mapping]] = ..., cotangent: _Optional[_Union[Tensor, _Mapping]] = ..., target_index: _Optional[int] = ..., output: _Optional[str] = ..., samples: _Optional[int] = ..., gradient_evaluations: _Optional[int] = ..., seed: _Optional[int] = ..., inherent_noise: _Optional[float] = ..., relative_error: _Optional[float] = ..., queued_ms: _Optional[float] = ..., computing_ms: _Optional[float] = ..., execution_provider: _Optional[str] = ..., method_description: _Optional[str] = ..., zero_scale_fraction: _Optional[float] = ..., standard_error_note: _Optional[str] = ...) -> None: ...

class ExplainResponse(_message.Message):
    __slots__ = ("model_name", "explanations", "request_id")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    EXPLANATIONS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    explanations: _containers.RepeatedCompositeFieldContainer[InstanceExplanation]
    request_id: str
    def __init__(self, model_name: _Optional[str] = ..., explanations: _Optional[_Iterable[_Union[InstanceExplanation, _Mapping]]] = ..., request_id: _Optional[str] = ...) -> None: ...

class ExplainStreamRequest(_message.Message):
    __slots__ = ("request",)
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    request: ExplainRequest
    def __init__(self, request: _Optional[_Union[ExplainRequest, _Mapping]] = ...) -> None: ...

class ExplainProgress(_message.Message):
    __slots__ = ("instance_index", "rank", "explanations_total", "samples_done", "samples_planned", "relative_error")
    INSTANCE_INDEX_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    EXPLANATIONS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_DONE_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_PLANNED_FIELD_NUMBER: _ClassVar[int]
    RELATIVE_ERROR_FIELD_NUMBER: _ClassVar[int]
    instance_index: int
    rank: int
    explanations_total: int
    samples_done: int
    samples_planned: int
    relative_error: float
    def __init__(self, instance_index: _Optional[int] = ..., rank: _Optional[int] = ..., explanations_total: _Optional[int] = ..., samples_done: _Optional[int] = ..., samples_planned: _Optional[int] = ..., relative_error: _Optional[float] = ...) -> None: ...

class ExplainStreamResponse(_message.Message):
    __slots__ = ("progress", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: ExplainProgress
    result: ExplainResponse
    def __init__(self, progress: _Optional[_Union[ExplainProgress, _Mapping]] = ..., result: _Optional[_Union[ExplainResponse, _Mapping]] = ...) -> None: ...

class TensorInfo(_message.Message):
    __slots__ = ("name", "datatype", "shape")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATATYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    datatype: DataType
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., datatype: _Optional[_Union[DataType, str]] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class Preprocessing(_message.Message):
    __slots__ = ("kind", "size", "channels", "scale", "invert", "mean", "std")
    KIND_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    INVERT_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    kind: str
    size: _containers.RepeatedScalarFieldContainer[int]
    channels: int
    scale: float
    invert: bool
    mean: _containers.RepeatedScalarFieldContainer[float]
    std: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, kind: _Optional[str] = ..., size: _Optional[_Iterable[int]] = ..., channels: _Optional[int] = ..., scale: _Optional[float] = ..., invert: _Optional[bool] = ..., mean: _Optional[_Iterable[float]] = ..., std: _Optional[_Iterable[float]] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "ready", "error", "input", "output", "graph_inputs", "graph_outputs", "lower", "upper", "labels", "feature_names", "preprocessing", "execution_provider", "description", "weights", "batching", "fixed_batch_size", "stale", "candidate_error", "version", "request_inputs", "explained_input", "config_source", "layout", "tokenizer", "has_tokenizer")
    NAME_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    GRAPH_INPUTS_FIELD_NUMBER: _ClassVar[int]
    GRAPH_OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    LOWER_FIELD_NUMBER: _ClassVar[int]
    UPPER_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    FEATURE_NAMES_FIELD_NUMBER: _ClassVar[int]
    PREPROCESSING_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_PROVIDER_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    BATCHING_FIELD_NUMBER: _ClassVar[int]
    FIXED_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_ERROR_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_INPUTS_FIELD_NUMBER: _ClassVar[int]
    EXPLAINED_INPUT_FIELD_NUMBER: _ClassVar[int]
    CONFIG_SOURCE_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    TOKENIZER_FIELD_NUMBER: _ClassVar[int]
    HAS_TOKENIZER_FIELD_NUMBER: _ClassVar[int]
    name: str
    ready: bool
    error: str
    input: TensorInfo
    output: TensorInfo
    graph_inputs: _containers.RepeatedCompositeFieldContainer[TensorInfo]
    graph_outputs: _containers.RepeatedCompositeFieldContainer[TensorInfo]
    lower: Tensor
    upper: Tensor
    labels: _containers.RepeatedScalarFieldContainer[str]
    feature_names: _containers.RepeatedScalarFieldContainer[str]
    preprocessing: Preprocessing
    execution_provider: str
    description: str
    weights: _containers.RepeatedScalarFieldContainer[str]
    batching: str
    fixed_batch_size: int
    stale: bool
    candidate_error: str
    version: str
    request_inputs: _containers.RepeatedCompositeFieldContainer[TensorInfo]
    explained_input: TensorInfo
    config_source: str
    layout: str
    tokenizer: str
    has_tokenizer: bool
    def __init__(self, name: _Optional[str] = ..., ready: _Optional[bool] = ..., error: _Optional[str] = ..., input: _Optional[_Union[TensorInfo, _Mapping]] = ..., output: _Optional[_Union[TensorInfo, _Mapping]] = ..., graph_inputs: _Optional[_Iterable[_Union[TensorInfo, _Mapping]]] = ..., graph_outputs: _Optional[_Iterable[_Union[TensorInfo, _Mapping]]] = ..., lower: _Optional[_Union[Tensor, _Mapping]] = ..., upper: _Optional[_Union[Tensor, _Mapping]] = ..., labels: _Optional[_Iterable[str]] = ..., feature_names: _Optional[_Iterable[str]] = ..., preprocessing: _Optional[_Union[Preprocessing, _Mapping]] = ..., execution_provider: _Optional[str] = ..., description: _Optional[str] = ..., weights: _Optional[_Iterable[str]] = ..., batching: _Optional[str] = ..., fixed_batch_size: _Optional[int] = ..., stale: _Optional[bool] = ..., candidate_error: _Optional[str] = ..., version: _Optional[str] = ..., request_inputs: _Optional[_Iterable[_Union[TensorInfo, _Mapping]]] = ..., explained_input: _Optional[_Union[TensorInfo, _Mapping]] = ..., config_source: _Optional[str] = ..., layout: _Optional[str] = ..., tokenizer: _Optional[str] = ..., has_tokenizer: _Optional[bool] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: ModelInfo
    def __init__(self, model: _Optional[_Union[ModelInfo, _Mapping]] = ...) -> None: ...

class ReloadModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReloadModelsResponse(_message.Message):
    __slots__ = ("models", "added", "reloaded", "removed")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    ADDED_FIELD_NUMBER: _ClassVar[int]
    RELOADED_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    added: _containers.RepeatedScalarFieldContainer[str]
    reloaded: _containers.RepeatedScalarFieldContainer[str]
    removed: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., added: _Optional[_Iterable[str]] = ..., reloaded: _Optional[_Iterable[str]] = ..., removed: _Optional[_Iterable[str]] = ...) -> None: ...
