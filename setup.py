from setuptools import find_packages, setup

# The repository's configs/ ship inside the wheel as natmu_lightning/config_files, where
# natmu_lightning.configs.configs_dir finds them when there is no checkout around the package.
setup(
    packages=[*find_packages(include=["natmu_lightning*"]), "natmu_lightning.config_files"],
    package_dir={"natmu_lightning.config_files": "configs"},
    package_data={"natmu_lightning.config_files": ["*.md", "*/*.yaml"]},
)
