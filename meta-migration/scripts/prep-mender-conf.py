#!/usr/bin/env python3
"""Run meta-mender's do_prepare_mender_conf for the `mender` recipe, plus the task's postfuncs
(as BitBake's task runner does), with extra variables given as VAR=value arguments; print the
resulting /etc (transient) and /data (persistent) mender.conf as JSON. Nothing is fetched or
compiled. Run inside an initialised build directory; BBLIB = path of bitbake/lib;
MIGRATION_TOOL_DIR = directory holding a host build of migration-stage-config (the postfunc runs
it from STAGING_BINDIR_NATIVE, which a real build fills from migration-stage-config-native).

    prep-mender-conf.py MIGRATION_STAGE=dual MIGRATION_OLD_SERVER=https://o MIGRATION_NEW_SERVER=https://n
"""
import json, os, shutil, sys, tempfile
sys.path.insert(0, os.environ.get('BBLIB', os.path.expanduser('~/y/poky/bitbake/lib')))
import bb.tinfoil, bb.data, bb.build, bb.utils

settings = dict(a.split('=', 1) for a in sys.argv[1:])
with bb.tinfoil.Tinfoil() as tf:
    tf.prepare(config_only=False, quiet=2)
    fn = tf.get_recipe_file('mender')
    cd = bb.data.createCopy(tf.config_data)
    for k, v in settings.items():
        cd.setVar(k, v)
    try:
        d = tf.parse_recipe_file(fn, appends=True, config_data=cd)
    except Exception as e:
        print("PARSE-ERROR:", e)
        sys.exit(3)
    if os.environ.get('MIGRATION_TOOL_DIR'):
        d.setVar('STAGING_BINDIR_NATIVE', os.environ['MIGRATION_TOOL_DIR'])
    tmp = tempfile.mkdtemp()
    for var in ('WORKDIR', 'T', 'B'):
        os.makedirs(os.path.join(tmp, var.lower()))
        d.setVar(var, os.path.join(tmp, var.lower()))
    if 'file://mender.conf' in (d.getVar('SRC_URI') or '').split():
        src = bb.utils.which(d.getVar('FILESPATH'), 'mender.conf')
        print('mender.conf from', src)
        dest = d.getVar('UNPACKDIR') or d.getVar('WORKDIR')
        os.makedirs(dest, exist_ok=True)
        shutil.copy(src, dest)
    print('MENDER_SERVER_URL =', repr(d.getVar('MENDER_SERVER_URL')))
    bb.build.exec_func('do_prepare_mender_conf', d)
    for f in (d.getVarFlag('do_prepare_mender_conf', 'postfuncs') or '').split():
        bb.build.exec_func(f, d)
    print('vardeps:', d.getVarFlag('do_prepare_mender_conf', 'vardeps').split()[-4:])
    for name in ('transient_mender.conf', 'persistent_mender.conf'):
        p = os.path.join(d.getVar('B'), name)
        if os.path.exists(p):
            print(name, json.dumps(json.load(open(p)), sort_keys=True))
