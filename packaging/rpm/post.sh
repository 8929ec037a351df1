# addond %post: directories and the config file's group; enable and start on a first
# install, restart on an upgrade (addon containers keep running across the restart).
systemd-tmpfiles --create addond.conf >/dev/null 2>&1 || :
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -eq 1 ]; then
        systemctl enable --now addond.service >/dev/null 2>&1 || :
    else
        systemctl try-restart addond.service >/dev/null 2>&1 || :
    fi
fi
exit 0
