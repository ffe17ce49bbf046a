"""Runs the Python of meta-migration's mender-migration-common.inc outside BitBake.

The functions are taken verbatim from the .inc (the `def`, the anonymous `python ()` and the
postfunc bodies), given a minimal stand-in for BitBake's datastore `d` and module `bb`, and run
against the files meta-mender's do_prepare_mender_conf leaves in ${B}. Exit 0 = all scenarios hold.
"""
import json
import os
import re
import sys
import tempfile
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
    namespace = {"os": os}
    bb = types.SimpleNamespace()

    def fatal(msg):
        raise Fatal(msg)

    bb.fatal = fatal
    namespace["bb"] = bb
    # Top-level `def` blocks.
    for m in re.finditer(r"^def .*?(?=^\S)", text, re.S | re.M):
        exec(m.group(0), namespace)
    # `python NAME() {` ... `}` blocks become functions of d.
    for m in re.finditer(r"^python (\w*) ?\(\) \{\n(.*?)^\}", text, re.S | re.M):
        name = m.group(1) or "anonymous"
        body = m.group(2)
        exec("def %s(d):\n%s\n    pass\n" % (name, body), namespace)
    return namespace


def main(inc_path):
    ns = load_functions(inc_path)
    old, new = "https://old.example.com", "https://new.example.com"
    failures = []

    def run_postfunc(values, transient, persistent=None):
        with tempfile.TemporaryDirectory() as b:
            with open(os.path.join(b, "transient_mender.conf"), "w") as f:
                json.dump(transient, f)
            if persistent is not None:
                with open(os.path.join(b, "persistent_mender.conf"), "w") as f:
                    json.dump(persistent, f)
            values = dict(values, B=b)
            ns["migration_set_mender_servers"](Store(values))
            t = json.load(open(os.path.join(b, "transient_mender.conf")))
            p = json.load(open(os.path.join(b, "persistent_mender.conf"))) if persistent is not None else None
            return t, p

    def expect(name, cond):
        if not cond:
            failures.append(name)

    def expect_fatal(name, fn):
        try:
            fn()
        except Fatal:
            return
        failures.append(name + " (no bb.fatal)")

    dual = {"MIGRATION_STAGE": "dual", "MIGRATION_OLD_SERVER": old + "/", "MIGRATION_NEW_SERVER": new, "MIGRATION_BAKED_CONFIG": "0"}
    t, p = run_postfunc(dual, {"serverurl": "https://docker.mender.io", "TenantToken": "tok"}, {"RootfsPartA": "/dev/a", "ServerURL": old})
    expect("dual: Servers [old, new]", t.get("Servers") == [{"ServerURL": old}, {"ServerURL": new}])
    expect("dual: no ServerURL in any case", not [k for k in t if k.lower() == "serverurl"])
    expect("dual: other keys kept", t.get("TenantToken") == "tok")
    expect("dual: server keys removed from /data copy", p == {"RootfsPartA": "/dev/a"})

    new_only = {"MIGRATION_STAGE": "new-only", "MIGRATION_NEW_SERVER": "new.example.com", "MIGRATION_BAKED_CONFIG": "0"}
    t, _ = run_postfunc(new_only, {"Servers": [{"ServerURL": old}], "ServerURL": new, "UpdatePollIntervalSeconds": 5})
    expect("new-only: only ServerURL = new", t == {"ServerURL": new, "UpdatePollIntervalSeconds": 5})

    baked_dual = {"MIGRATION_STAGE": "dual", "MIGRATION_BAKED_CONFIG": "1"}
    good = {"Servers": [{"ServerURL": old}, {"ServerURL": new}], "TenantToken": "x"}
    t, _ = run_postfunc(baked_dual, good)
    expect("baked dual: file untouched", t == good)
    expect_fatal("baked dual with ServerURL", lambda: run_postfunc(baked_dual, dict(good, ServerURL="")))
    baked_new = {"MIGRATION_STAGE": "new-only", "MIGRATION_BAKED_CONFIG": "1"}
    expect_fatal("baked new-only with Servers", lambda: run_postfunc(baked_new, good))

    anon = ns["anonymous"]
    anon(Store(dual))
    anon(Store(new_only))
    anon(Store(baked_dual))  # baked: no server variables needed
    expect_fatal("dual without old server", lambda: anon(Store(dict(dual, MIGRATION_OLD_SERVER=""))))
    expect_fatal("missing new server", lambda: anon(Store(dict(new_only, MIGRATION_NEW_SERVER=None))))
    expect_fatal("server with a path", lambda: anon(Store(dict(new_only, MIGRATION_NEW_SERVER="https://h/api"))))
    expect_fatal("ftp scheme", lambda: anon(Store(dict(new_only, MIGRATION_NEW_SERVER="ftp://h"))))
    expect_fatal("same old and new", lambda: anon(Store(dict(dual, MIGRATION_OLD_SERVER=new))))

    if failures:
        print("FAILED: " + "; ".join(failures))
        return 1
    print("ok: %d scenario groups" % 4)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
