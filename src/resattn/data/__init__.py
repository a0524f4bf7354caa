"""Data: transforms, datasets (real and synthetic), the dataset registry and loaders."""
from .._lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, {
    ".datasets": ["DATASETS", "dataset_info", "get_dataset", "get_data_loader", "digits_split",
                  "make_cluttered_digits", "ImageDataset", "ClutteredDigits", "Preprocess",
                  "ShardSampler", "shard_indices", "pad_crop", "random_flip", "cutout",
                  "random_resized_crop", "resize_short", "center_crop"],
})
