"""Per-channel statistics of images scaled to [0, 1]: the one place that defines them.

Model specs (the preprocessing a model's weights expect) and datasets (the
normalisation they apply) both read these.
"""

#: ImageNet mean and std (torchvision, GluonCV); also what the seed implementation's
#: CIFAR-10 files were trained with.
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
#: The CIFAR-10 values every codebase of the resattn lineage uses.
CIFAR10 = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
CIFAR100 = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))

#: CIFAR-10's class names, in label order.
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
#: The digits datasets' class names.
DIGIT_CLASSES = tuple(str(d) for d in range(10))
