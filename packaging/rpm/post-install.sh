# gapless rpm %post: the state directory, then the unit (enabled; it starts once
# GAPLESS_ENDPOINT is set in /etc/default/gapless).
install -d -o gapless -g gapless -m 0750 /var/lib/gapless
chown root:gapless /etc/default/gapless 2>/dev/null || true
chmod 0640 /etc/default/gapless 2>/dev/null || true
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
    systemctl enable gapless.service >/dev/null 2>&1 || true
    # An upgrade ($1 = 2) restarts the running agent; the WAL is kept.
    [ "$1" -gt 1 ] && systemctl try-restart gapless.service >/dev/null 2>&1 || true
fi
exit 0
