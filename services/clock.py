"""Times as the clinic reads them: stored in UTC, shown in TIME_ZONE (settings), with the zone named.

Every page, report and export that shows a time formats it here, so the whole app speaks one zone.
"""

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from settings import get_settings


def clinic_zone() -> ZoneInfo:
    return ZoneInfo(get_settings().time_zone)


def zone_name() -> str:
    """The zone's name for a column header or a caption, e.g. "Europe/Paris"."""
    return get_settings().time_zone


def local(moment: datetime) -> datetime:
    """A stored time (naive UTC, or aware) in the clinic's zone."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(clinic_zone())


def format_time(moment: datetime | None, *, seconds: bool = False, zone: bool = True) -> str:
    """ "2026-12-06 10:15 CET" (the zone's abbreviation as it was on that day); "" for no time."""
    if moment is None:
        return ""
    shown = local(moment)
    text = shown.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")
    return f"{text} {shown.tzname()}" if zone else text


def utc_bounds(first: date, last: date) -> tuple[datetime, datetime]:
    """The stored (naive UTC) times from the start of `first` to the end of `last`, both clinic days."""
    zone = clinic_zone()
    start = datetime.combine(first, time.min, tzinfo=zone).astimezone(UTC).replace(tzinfo=None)
    end = datetime.combine(last + timedelta(days=1), time.min, tzinfo=zone).astimezone(UTC).replace(tzinfo=None)
    return start, end


def today() -> date:
    """Today's date in the clinic."""
    return datetime.now(clinic_zone()).date()
