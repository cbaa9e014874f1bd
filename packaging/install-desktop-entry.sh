#!/bin/sh
# Add Endoshare to this user's applications menu (no root needed), pointing at this folder.
# Run it again after moving the folder; remove the entry with:  ./install-desktop-entry.sh --remove
set -eu
here=$(cd "$(dirname "$0")" && pwd)
apps="${XDG_DATA_HOME:-$HOME/.local/share}/applications"
icons="${XDG_DATA_HOME:-$HOME/.local/share}/icons/hicolor/256x256/apps"
if [ "${1:-}" = "--remove" ]; then
    rm -f "$apps/endoshare.desktop" "$icons/endoshare.png"
    echo "Removed Endoshare from the applications menu."
    exit 0
fi
mkdir -p "$apps" "$icons"
cp "$here/endoshare.png" "$icons/endoshare.png"
# The Exec key quotes the path, so a folder name with spaces works (Desktop Entry specification).
escaped=$(printf '%s' "$here/endoshare-gui" | sed 's/[\\"`$]/\\\\&/g')
sed "s|^Exec=.*|Exec=\"$escaped\"|" "$here/endoshare.desktop" > "$apps/endoshare.desktop.part"
mv "$apps/endoshare.desktop.part" "$apps/endoshare.desktop"
command -v update-desktop-database >/dev/null 2>&1 && update-desktop-database "$apps" >/dev/null 2>&1 || true
echo "Endoshare is in your applications menu ($apps/endoshare.desktop)."
