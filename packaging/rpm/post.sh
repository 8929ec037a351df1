# addond %post: directories and the config file's group; enable and start on a first
# install, restart on an upgrade (addon containers keep running across the restart).
systemd-tmpfiles --create addond.conf >/dev/null 2>&1 || :
# The sample addon image the templates run (templates.image_archive): loaded now when Docker
# answers and lacks it; otherwise addond loads it at the first template create.
if [ -f /usr/share/addond/addond-sample.tar.gz ] && command -v docker >/dev/null 2>&1 \
    && timeout 10 docker info >/dev/null 2>&1 \
    && ! docker image inspect addond-sample:latest >/dev/null 2>&1; then
    timeout 120 docker load -q -i /usr/share/addond/addond-sample.tar.gz >/dev/null 2>&1 || :
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -eq 1 ]; then
        systemctl enable --now addond.service >/dev/null 2>&1 || :
    else
        systemctl try-restart addond.service >/dev/null 2>&1 || :
    fi
fi
exit 0
