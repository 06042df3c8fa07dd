"""What each dataset adapter expects under its root, shown when a root is missing or malformed.
Torch-free: the workflow checks roots with it before any job runs."""

LAYOUTS = {
    "imagefolder": "<root>/<class name>/<image>",
    "train": "<root>/<class>/<image> (ImageNet train: <root>/n01440764/*.JPEG ...)",
    "imagenet": "<root>/n01440764/*.JPEG ... : the ImageNet val folder with its 1000 wnid folders",
    "imagenet_v2": "<root>/ImageNetV2-matched-frequency/<0..999>/*.jpeg "
    "(or <root>/imagenetv2-matched-frequency-format-val/<0..999>/*.jpeg)",
    "imagenet_sketch": "<root>/n01440764/*.JPEG ... : the ImageNet-Sketch 'sketch' folder with 1000 wnid folders",
    "imagenet_r": "<root>/n01443537/*.jpg ... : the imagenet-r folder with its 200 wnid folders",
    "imagenet_a": "<root>/n01498041/*.jpg ... : the imagenet-a folder with its 200 wnid folders",
    "objectnet": "<root>/images/<folder>/*.png : the ObjectNet 1.0 folder, 313 object folders under images/",
}
