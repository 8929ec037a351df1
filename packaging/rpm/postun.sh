# addond %postun: the database and volumes in /var/lib/addond stay unless the erase was
# asked to remove them: ADDOND_PURGE_DATA=yes rpm -e addond
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -eq 0 ] && [ "${ADDOND_PURGE_DATA:-}" = "yes" ]; then
    rm -rf /var/lib/addond
fi
exit 0
