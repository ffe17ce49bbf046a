# Server migration for the Mender client's /etc/mender/mender.conf. Opt-in: nothing changes
# unless MIGRATION_STAGE is set, so adding the layer alone keeps builds (and signatures) as they
# were.
#
#   MIGRATION_STAGE = "dual"      stage 1: Servers [old, new], no ServerURL
#   MIGRATION_STAGE = "new-only"  stage 2: ServerURL = the new server only
#
# The servers come from MIGRATION_OLD_SERVER / MIGRATION_NEW_SERVER (see README). The names do
# not start with MENDER_ because meta-mender warns about every MENDER_ name it does not know.

MIGRATION_STAGE ??= ""

require ${@'mender-migration-%s.inc' % (d.getVar('MIGRATION_STAGE') if d.getVar('MIGRATION_STAGE') in ['dual', 'new-only'] else 'invalid-stage') if d.getVar('MIGRATION_STAGE') else ''}
