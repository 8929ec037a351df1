# addond %pre: the system user and group (as sysusers.d/addond.conf describes them).
getent group addond >/dev/null || groupadd -r addond
getent passwd addond >/dev/null || \
    useradd -r -g addond -d /var/lib/addond -s /sbin/nologin -c "addond addon appliance daemon" addond
exit 0
