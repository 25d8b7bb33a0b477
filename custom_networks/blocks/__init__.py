from .cbam import CBAM, ChannelAttention, SpatialAttention
from .affinity_attention import AffinityAttention
from .scale_feature_attention import ScaleFeatureAttention
from .multiscale_residual import MultiScaleConv, MultiScaleResidualUnit
from .inception import InceptionBlock
from .dense import DenseUnit
from .unet_units import get_unit, register_unit, unit_names
from .unet_attention import NoSkipGate, get_block_attention, get_skip_attention
