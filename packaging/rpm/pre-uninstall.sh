# gapless rpm %preun: on removal ($1 = 0, not an upgrade) stop and disable the unit.
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
    systemctl --no-reload disable --now gapless.service >/dev/null 2>&1 || true
fi
exit 0
