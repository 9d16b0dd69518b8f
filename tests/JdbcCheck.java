// `chatlake serve` through pgjdbc, the driver DBeaver, Metabase and Tableau
// use (issue 21): the DatabaseMetaData calls they make first (getSchemas,
// getTables, getColumns), then every reporting view, whose rows are written
// as JSON lines for tests/server_clients.py to compare with `chatlake query`.
// Run by tests/server.sh as a single-file program:
//   java -cp postgresql.jar tests/JdbcCheck.java URL USER PASSWORD OUT VIEW...
import java.io.PrintWriter;
import java.math.BigDecimal;
import java.sql.*;
import java.time.LocalDate;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import java.util.*;

public class JdbcCheck {
    static void check(boolean ok, String what) {
        if (!ok) {
            System.err.println("FAIL: jdbc: " + what);
            System.exit(1);
        }
    }

    static String json(Object v) {
        if (v == null) return "null";
        if (v instanceof Boolean || v instanceof Long || v instanceof Integer || v instanceof Short) return v.toString();
        if (v instanceof Double d) return d.isNaN() || d.isInfinite() ? "\"" + d + "\"" : d.toString();
        if (v instanceof Float f) return json(f.doubleValue());
        if (v instanceof BigDecimal b) return b.toPlainString();
        StringBuilder s = new StringBuilder("\"");
        for (char c : v.toString().toCharArray()) {
            if (c == '"' || c == '\\') s.append('\\').append(c);
            else if (c < 0x20) s.append(String.format("\\u%04x", (int) c));
            else s.append(c);
        }
        return s.append('"').toString();
    }

    /** A column's value as the comparison takes it: instants in UTC, dates as ISO. */
    static Object value(ResultSet rs, int i, String type) throws SQLException {
        switch (type) {
            case "timestamptz": {
                OffsetDateTime t = rs.getObject(i, OffsetDateTime.class);
                return t == null ? null : t.withOffsetSameInstant(ZoneOffset.UTC).toString();
            }
            case "date": {
                LocalDate d = rs.getObject(i, LocalDate.class);
                return d == null ? null : d.toString();
            }
            default:
                Object o = rs.getObject(i);
                return o instanceof Array a ? Arrays.asList((Object[]) a.getArray()).toString() : o;
        }
    }

    /**
     * The catalog as a database navigator (DBeaver's, say) shows it, built
     * from the DatabaseMetaData calls those tools make: chatlake's schemas,
     * their tables and views, and each reporting view's columns with the
     * types the driver reports. tests/server.sh compares it with
     * docs/bi-catalog.txt, which the README shows.
     */
    static void writeNavigator(DatabaseMetaData md, String file) throws Exception {
        List<String> schemas = List.of("socialintents", "social25", "crm", "meta", "reporting");
        try (PrintWriter t = new PrintWriter(file, "UTF-8")) {
            t.println("datafusion  (" + md.getDatabaseProductName() + " " + md.getDatabaseProductVersion()
                    + ", through " + md.getDriverName() + " " + md.getDriverVersion().replaceAll(" .*", "") + ")");
            for (int i = 0; i < schemas.size(); i++) {
                String s = schemas.get(i);
                boolean lastSchema = i == schemas.size() - 1;
                t.println((lastSchema ? "└── " : "├── ") + s);
                String indent = lastSchema ? "    " : "│   ";
                TreeMap<String, String> objects = new TreeMap<>();
                try (ResultSet rs = md.getTables(null, s, "%", new String[] {"TABLE", "VIEW"})) {
                    while (rs.next()) objects.put(rs.getString("TABLE_NAME"), rs.getString("TABLE_TYPE").toLowerCase());
                }
                int j = 0;
                for (Map.Entry<String, String> o : objects.entrySet()) {
                    boolean lastObject = ++j == objects.size();
                    t.println(indent + (lastObject ? "└── " : "├── ") + o.getKey() + "  (" + o.getValue() + ")");
                    if (!o.getValue().equals("view")) continue;
                    List<String> cols = new ArrayList<>();
                    int width = 0;
                    try (ResultSet rs = md.getColumns(null, s, o.getKey(), "%")) {
                        while (rs.next()) {
                            cols.add(rs.getString("COLUMN_NAME") + "\t" + rs.getString("TYPE_NAME"));
                            width = Math.max(width, rs.getString("COLUMN_NAME").length());
                        }
                    }
                    String inner = indent + (lastObject ? "    " : "│   ");
                    for (int k = 0; k < cols.size(); k++) {
                        String[] nt = cols.get(k).split("\t");
                        t.println(inner + (k == cols.size() - 1 ? "└── " : "├── ")
                                + String.format("%-" + width + "s  %s", nt[0], nt[1]));
                    }
                }
            }
        }
    }

    public static void main(String[] args) throws Exception {
        String url = args[0], user = args[1], password = args[2], out = args[3];
        List<String> views = Arrays.asList(args).subList(4, args.length);
        try (Connection c = DriverManager.getConnection(url, user, password);
             PrintWriter w = new PrintWriter(out, "UTF-8")) {
            DatabaseMetaData md = c.getMetaData();
            System.out.println("jdbc: " + md.getDriverName() + " " + md.getDriverVersion()
                    + " to " + md.getDatabaseProductName() + " " + md.getDatabaseProductVersion());

            Set<String> schemas = new TreeSet<>();
            try (ResultSet rs = md.getSchemas()) {
                while (rs.next()) schemas.add(rs.getString("TABLE_SCHEM"));
            }
            for (String s : List.of("socialintents", "social25", "crm", "meta", "reporting"))
                check(schemas.contains(s), "getSchemas() lacks " + s + ": " + schemas);

            Set<String> tables = new TreeSet<>();
            try (ResultSet rs = md.getTables(null, "socialintents", "%", new String[] {"TABLE"})) {
                while (rs.next()) tables.add(rs.getString("TABLE_NAME"));
            }
            for (String t : List.of("chats", "chat_messages", "contacts", "offline_messages", "widgets"))
                check(tables.contains(t), "getTables(socialintents, TABLE) lacks " + t + ": " + tables);

            Set<String> viewNames = new TreeSet<>();
            try (ResultSet rs = md.getTables(null, "reporting", "%", new String[] {"VIEW"})) {
                while (rs.next()) viewNames.add("reporting." + rs.getString("TABLE_NAME"));
            }
            check(viewNames.equals(new TreeSet<>(views)), "getTables(reporting, VIEW) gives " + viewNames + ", not " + views);

            Map<String, String> columns = new LinkedHashMap<>();
            try (ResultSet rs = md.getColumns(null, "reporting", "chats", "%")) {
                while (rs.next()) columns.put(rs.getString("COLUMN_NAME"), rs.getString("TYPE_NAME"));
            }
            check("timestamptz".equals(columns.get("started_at")), "getColumns(reporting.chats): started_at is " + columns.get("started_at"));
            check("date".equals(columns.get("dt")), "getColumns(reporting.chats): dt is " + columns.get("dt"));
            System.out.println("jdbc: getSchemas " + schemas.size() + " schemas, getTables " + tables.size()
                    + " socialintents tables and " + viewNames.size() + " reporting views, getColumns(reporting.chats) "
                    + columns.size() + " columns (started_at timestamptz, dt date)");

            String navigator = System.getProperty("navigator");
            if (navigator != null) writeNavigator(md, navigator);

            int rows = 0;
            for (String view : views) {
                try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery("SELECT * FROM " + view)) {
                    ResultSetMetaData m = rs.getMetaData();
                    while (rs.next()) {
                        StringBuilder line = new StringBuilder("{\"view\":").append(json(view)).append(",\"row\":[");
                        for (int i = 1; i <= m.getColumnCount(); i++) {
                            if (i > 1) line.append(',');
                            line.append(json(value(rs, i, m.getColumnTypeName(i))));
                        }
                        w.println(line.append("]}"));
                        rows++;
                    }
                }
            }
            // A prepared statement with a date parameter.
            try (PreparedStatement ps = c.prepareStatement("SELECT COUNT(*) FROM reporting.chats WHERE dt = ?")) {
                ps.setObject(1, LocalDate.parse("2025-10-29"));
                try (ResultSet rs = ps.executeQuery()) {
                    check(rs.next(), "the prepared statement gave no row");
                    w.println("{\"view\":\"count 2025-10-29\",\"row\":[" + rs.getLong(1) + "]}");
                }
            }
            System.out.println("jdbc: " + views.size() + " views read, " + rows + " rows");
        }
    }
}
