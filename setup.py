"""Package set-up read from settings.ini (the nbdev 2 convention)."""
from configparser import ConfigParser

import setuptools

cfg = ConfigParser(delimiters=["="])
cfg.read("settings.ini", encoding="utf-8")
c = cfg["DEFAULT"]
scripts = [s.strip() for s in c.get("console_scripts", "").split("\n") if s.strip()]

setuptools.setup(
    name=c["lib_name"],
    version=c["version"],
    description=c["description"],
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    keywords=c["keywords"].split(),
    author=c["author"],
    author_email=c["author_email"],
    url=c["git_url"],
    classifiers=["Programming Language :: Python :: 3.11"],
    license="Apache-2.0",
    python_requires=">=" + c["min_python"],
    packages=setuptools.find_packages(include=[c["lib_name"], c["lib_name"] + ".*"]),
    package_data={c["lib_name"]: ["configs/*.yaml", "data/*.npz", "data/*.md"]},
    include_package_data=True,
    install_requires=c.get("requirements", "").split(),
    extras_require={"ray": ["ray"], "wandb": ["wandb"]},
    entry_points={"console_scripts": scripts, "nbdev": [f'{c["lib_path"]}={c["lib_path"]}._modidx:d']},
    zip_safe=False,
)
