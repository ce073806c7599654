"""What operators read, apart from the control loop that acts: the admin status page (page.py,
its template in apps/control/templates), the control process's Prometheus collector
(metrics.py, served by run_control), and the reads both use (selectors.py). Nothing here
changes anything; the control models' admin stays with them in apps/control/admin.py."""
