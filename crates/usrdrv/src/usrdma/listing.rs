//! Placeholder: the system-wide listing of usrdma buffers from sysfs.
