"""Runs meta-migration's stage logic outside BitBake, as BitBake would for the `mender` recipe.

Usage: layer_postfunc.py INC VALUES.json
The anonymous `python ()` and the `migration_set_mender_servers` postfunc are taken verbatim
from INC (mender-migration-common.inc), given a minimal stand-in for BitBake's datastore `d`
(VALUES: variable -> value, including B and STAGING_BINDIR_NATIVE) and for `bb.fatal`, and run
in BitBake's order (parse-time function, then the postfunc on the files in B).
Exit 0 = the files in B are the stage; exit 1 = bb.fatal, its message on stdout.
"""
import json
import os
import re
import sys
import types


class Fatal(Exception):
    pass


class Store:
    def __init__(self, values):
        self.values = values

    def getVar(self, name):
        return self.values.get(name)


def load_functions(inc_path):
    text = open(inc_path).read()
    bb = types.SimpleNamespace()

    def fatal(msg):
        raise Fatal(msg)

    bb.fatal = fatal
    namespace = {"os": os, "bb": bb}
    for m in re.finditer(r"^def .*?(?=^\S)", text, re.S | re.M):
        exec(m.group(0), namespace)
    for m in re.finditer(r"^python (\w*) ?\(\) \{\n(.*?)^\}", text, re.S | re.M):
        name = m.group(1) or "anonymous"
        exec("def %s(d):\n%s\n    pass\n" % (name, m.group(2)), namespace)
    return namespace


def main(inc_path, values_path):
    ns = load_functions(inc_path)
    d = Store(json.load(open(values_path)))
    try:
        ns["anonymous"](d)
        ns["migration_set_mender_servers"](d)
    except Fatal as e:
        print(e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
