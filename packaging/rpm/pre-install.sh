# gapless rpm %pre: the system user and group, before files are owned by them.
getent group gapless >/dev/null || groupadd --system gapless
getent passwd gapless >/dev/null || useradd --system --gid gapless --home-dir /var/lib/gapless \
    --no-create-home --shell /sbin/nologin --comment "gapless log forwarder" gapless
# Read /var/log and the systemd journal (the journald source).
for g in adm systemd-journal; do
    getent group "$g" >/dev/null && usermod -a -G "$g" gapless || true
done
exit 0
