from .rcb_unetplusplus import RCBUNetPlusPlus
from .resattunet import ResAttUNet, load_torchvision_resnet34
from .iacnn import IACNN
from .msrunet import MSRUNet
from .unet_variants import VariantUNet
from .cascade_unet import CascadeUNet, variant_cascade
