"""The factory's module imports its parts at the top: none of the names it binds may
replace a submodule in the package's namespace (`flashcart.stores` must stay the
module, not the `stores` extension object)."""

import pkgutil
import sys

import flashcart


def test_every_submodule_is_what_the_package_says_it_is():
    for info in pkgutil.walk_packages(flashcart.__path__, "flashcart."):
        __import__(info.name)
    for name, module in sorted(sys.modules.items()):
        parent, _, child = name.rpartition(".")
        if parent in sys.modules and parent.startswith("flashcart") and child:
            assert getattr(sys.modules[parent], child, module) is module, name
